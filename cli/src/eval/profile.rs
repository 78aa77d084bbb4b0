//! Entropy profiles of thinking (the paper's Figure 4): the mean next-token entropy at each
//! thinking position, over the answers still thinking there, per decoding; and their plot.

use std::path::Path;

use softcot_core::Result;

use super::EvalReport;
use crate::plot::{write_png, Panel, Series};

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

/// Line colours, cycled: one per (model, decoding).
const COLORS: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// Writes `path` (a PNG): one line per decoding of each `(label, report)`, entropy over thinking
/// position. Lines are named by decoding alone when there is one model.
pub fn write_entropy_png(path: &Path, models: &[(&str, &EvalReport)]) -> Result<()> {
    let mut names = Vec::new();
    let mut points = Vec::new();
    for &(label, report) in models {
        for d in &report.decodings {
            names.push(match models.len() {
                1 => d.decoding.name().to_string(),
                _ => format!("{label} {}", d.decoding.name()),
            });
            points.push(
                d.entropy
                    .iter()
                    .enumerate()
                    .map(|(t, &h)| (t as f64, h))
                    .collect::<Vec<_>>(),
            );
        }
    }
    let series = names
        .iter()
        .zip(&points)
        .enumerate()
        .map(|(i, (name, points))| Series {
            name,
            points,
            color: COLORS[i % COLORS.len()],
        })
        .collect();
    let panel = Panel {
        title: "next-token entropy while thinking (mean over answers still thinking)",
        y_label: "entropy (nats)",
        series,
    };
    write_png(path, "thinking position", &[panel])
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
