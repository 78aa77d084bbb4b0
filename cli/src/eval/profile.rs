//! Entropy profiles of thinking (the paper's Figure 4): the mean next-token entropy at each
//! thinking position, over the answers still thinking there, per decoding; and their plot.

use std::path::Path;

use softcot_core::think::ThinkMode;
use softcot_core::Result;

use super::EvalReport;
use crate::plot::{write_png, Panel, Series, PALETTE};

/// Sums of the recorded entropies at each thinking position, and the rows that reached it.
#[derive(Default)]
pub struct Profile {
    sums: Vec<f64>,
    pub rows: Vec<usize>,
}

impl Profile {
    /// Adds one answer's entropies, one per thinking step.
    pub fn add(&mut self, entropy: &[f32]) {
        if self.sums.len() < entropy.len() {
            self.sums.resize(entropy.len(), 0.0);
            self.rows.resize(entropy.len(), 0);
        }
        for (t, &h) in entropy.iter().enumerate() {
            self.sums[t] += h as f64;
            self.rows[t] += 1;
        }
    }

    /// The mean at each position (every position up to the longest thinking has a row).
    pub fn means(&self) -> Vec<f64> {
        self.sums.iter().zip(&self.rows).map(|(&s, &n)| s / n as f64).collect()
    }
}

/// One line: its legend name and points (thinking position, mean entropy).
type Line = (String, Vec<(f64, f64)>);

/// Writes `path` (a PNG): a panel per thinking mode (hard, soft, fuzzy: so legends stay short),
/// in it one line per greedy / sample decoding of each `(label, report)`, entropy over thinking
/// position. Lines are named by the model's label too when there are several models.
pub fn write_entropy_png(path: &Path, models: &[(&str, &EvalReport)]) -> Result<()> {
    let lines: Vec<(ThinkMode, Vec<Line>)> = [ThinkMode::Hard, ThinkMode::Soft, ThinkMode::Fuzzy]
        .into_iter()
        .map(|mode| (mode, mode_lines(mode, models)))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let titles: Vec<String> = lines
        .iter()
        .map(|(mode, _)| format!("{} thinking", mode.name()))
        .collect();
    let panels: Vec<Panel> = lines
        .iter()
        .zip(&titles)
        .map(|((_, l), title)| Panel {
            title,
            y_label: "entropy (nats)",
            series: l
                .iter()
                .enumerate()
                .map(|(i, (name, points))| Series {
                    name,
                    points,
                    color: PALETTE[i % PALETTE.len()],
                })
                .collect(),
        })
        .collect();
    write_png(path, "thinking position", &panels)
}

/// The lines of one thinking mode's panel.
fn mode_lines(mode: ThinkMode, models: &[(&str, &EvalReport)]) -> Vec<Line> {
    let mut lines = Vec::new();
    for &(label, report) in models {
        for d in report.decodings.iter().filter(|d| d.decoding.mode == mode) {
            let how = if d.decoding.greedy { "greedy" } else { "sample" };
            let name = match models.len() {
                1 => how.to_string(),
                _ => format!("{label} {how}"),
            };
            lines.push((
                name,
                d.entropy.iter().enumerate().map(|(t, &h)| (t as f64, h)).collect(),
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_averages_over_the_rows_still_thinking() {
        let mut p = Profile::default();
        p.add(&[1.0, 2.0, 3.0]);
        p.add(&[3.0]);
        p.add(&[]);
        assert_eq!(p.means(), vec![2.0, 2.0, 3.0]);
        assert_eq!(p.rows, vec![2, 1, 1]);
    }
}
