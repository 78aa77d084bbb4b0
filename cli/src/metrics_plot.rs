//! The figures of training runs, drawn from their `metrics.jsonl`: `OUT/metrics.png` of an RL or
//! supervised run (every logged metric, in panels), and the overlay of several runs
//! (`train --compare`'s `compare.png`, one colour per thinking mode).

use std::path::{Path, PathBuf};

use serde_json::Value;
use softcot_core::Result;

use crate::plot::{ema, ema_weight, faint, write_png, Panel, Series, PALETTE};

/// One panel: its title, y axis label, and the metrics.jsonl keys drawn in it with their legend names.
pub struct PanelSpec {
    pub title: &'static str,
    pub y_label: &'static str,
    pub keys: &'static [(&'static str, &'static str)],
    /// Whether long series get a moving average: not for values the run sets itself (lr,
    /// sigma), which are not noisy and which an average would only show late.
    pub smooth: bool,
}

const fn spec(title: &'static str, y_label: &'static str, keys: &'static [(&'static str, &'static str)]) -> PanelSpec {
    PanelSpec {
        title,
        y_label,
        keys,
        smooth: true,
    }
}

/// A panel of set values, drawn as logged.
const fn exact(title: &'static str, y_label: &'static str, keys: &'static [(&'static str, &'static str)]) -> PanelSpec {
    PanelSpec {
        smooth: false,
        ..spec(title, y_label, keys)
    }
}

/// `softcot train`: what `rl_loop` logs per step, and the validation's points.
pub const RL_PANELS: &[PanelSpec] = &[
    spec("mean reward of the rollouts", "reward", &[("reward", "reward")]),
    spec(
        "shares of rollouts",
        "share",
        &[
            ("accuracy", "correct"),
            ("extracted", "boxed"),
            ("stopped_by_phrase", "stopped"),
            ("val_acc", "val correct (greedy)"),
        ],
    ),
    spec("loss", "loss", &[("loss", "loss")]),
    spec("gradient norm (before clipping)", "norm", &[("grad_norm", "norm")]),
    spec(
        "thinking and answer length",
        "tokens",
        &[
            ("think_len", "thinking"),
            ("answer_len", "answer"),
            ("val_think_len", "val thinking"),
        ],
    ),
    exact("learning rate", "lr", &[("lr", "lr")]),
    exact("noise scale sigma", "sigma", &[("sigma", "sigma")]),
    spec(
        "seconds per step",
        "s",
        &[("rollout_s", "rollouts"), ("update_s", "update")],
    ),
];

/// `softcot sft`.
pub const SFT_PANELS: &[PanelSpec] = &[
    spec("loss (mean per target token)", "loss", &[("loss", "loss")]),
    spec("gradient norm (before clipping)", "norm", &[("grad_norm", "norm")]),
    exact("learning rate", "lr", &[("lr", "lr")]),
    spec("throughput", "tokens/s", &[("tokens_per_s", "tokens/s")]),
];

/// A series as drawn: from this many points on, a faint raw line under its moving average;
/// below, the points themselves (marked, see `plot`), as validation curves are.
const SMOOTH_MIN_POINTS: usize = 50;

/// The parsed lines of `dir/metrics.jsonl` (none if it is missing).
fn read_metrics(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// (step, value) of `key` in every line that has both.
fn points(lines: &[Value], key: &str) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
        .collect()
}

/// A line to draw: its legend name ("" for none), colour and points.
struct Line {
    name: String,
    color: [u8; 3],
    points: Vec<(f64, f64)>,
}

/// The lines of one metric: the raw points, or for a long series to `smooth` a faint raw line and
/// its EMA.
fn lines_of(name: String, color: [u8; 3], raw: Vec<(f64, f64)>, smooth: bool) -> Vec<Line> {
    if !smooth || raw.len() < SMOOTH_MIN_POINTS {
        return vec![Line {
            name,
            color,
            points: raw,
        }];
    }
    let smooth = ema(&raw, ema_weight(raw.len()));
    vec![
        Line {
            name: String::new(),
            color: faint(color),
            points: raw,
        },
        Line {
            name,
            color,
            points: smooth,
        },
    ]
}

/// Writes the panels of `lines` (one list of lines per panel spec) to `png`.
fn draw(png: &Path, specs: &[(String, &str)], lines: &[Vec<Line>]) -> Result<()> {
    let panels: Vec<Panel> = specs
        .iter()
        .zip(lines)
        .map(|((title, y_label), lines)| Panel {
            title,
            y_label,
            series: lines
                .iter()
                .map(|l| Series {
                    name: &l.name,
                    points: &l.points,
                    color: l.color,
                })
                .collect(),
        })
        .collect();
    write_png(png, "step", &panels)
}

/// `out/metrics.png` from `out/metrics.jsonl`: a panel per spec, a colour per key.
pub fn draw_run(out: &Path, specs: &[PanelSpec]) -> Result<()> {
    let metrics = read_metrics(out);
    let lines: Vec<Vec<Line>> = specs
        .iter()
        .map(|s| {
            let keys = s.keys.iter().zip(PALETTE.iter().cycle());
            keys.flat_map(|(&(key, name), &c)| lines_of(name.to_string(), c, points(&metrics, key), s.smooth))
                .collect()
        })
        .collect();
    let titles: Vec<(String, &str)> = specs.iter().map(|s| (s.title.to_string(), s.y_label)).collect();
    draw(&out.join("metrics.png"), &titles, &lines)
}

/// `png`: the runs `(label, folder)` overlaid, a colour per run, a panel per key of `specs`
/// (titled `spec title: key's legend name` where its spec has several keys).
pub fn draw_compare(png: &Path, runs: &[(String, PathBuf)], specs: &[PanelSpec]) -> Result<()> {
    let metrics: Vec<Vec<Value>> = runs.iter().map(|(_, dir)| read_metrics(dir)).collect();
    let (mut titles, mut lines) = (Vec::new(), Vec::new());
    for s in specs {
        for &(key, name) in s.keys {
            let title = match s.keys.len() {
                1 => s.title.to_string(),
                _ => format!("{}: {name}", s.title),
            };
            titles.push((title, s.y_label));
            let per_run = runs.iter().zip(&metrics).zip(PALETTE.iter().cycle());
            lines.push(
                per_run
                    .flat_map(|(((label, _), m), &c)| lines_of(label.clone(), c, points(m, key), s.smooth))
                    .collect(),
            );
        }
    }
    draw(png, &titles, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_series_are_drawn_faint_and_smoothed_short_ones_as_they_are() {
        let long: Vec<(f64, f64)> = (0..120).map(|i| (i as f64, (i % 2) as f64)).collect();
        let lines = lines_of("reward".into(), PALETTE[0], long.clone(), true);
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].name.as_str(), lines[0].color), ("", faint(PALETTE[0])));
        assert_eq!(lines[0].points, long);
        assert_eq!(lines[1].points, ema(&long, 0.75));
        // The smoothed alternation 0, 1, 0, 1 ... settles near its mean.
        let last = lines[1].points.last().unwrap().1;
        assert!((last - 0.5).abs() < 0.2, "{last}");
        let short = lines_of("val".into(), PALETTE[1], long[..5].to_vec(), true);
        assert_eq!(short.len(), 1);
        assert_eq!((short[0].name.as_str(), short[0].points.len()), ("val", 5));
        let lr = lines_of("lr".into(), PALETTE[2], long.clone(), false);
        assert_eq!((lr.len(), lr[0].color, lr[0].points.len()), (1, PALETTE[2], 120));
    }

    /// Two runs' metrics.jsonl overlaid: a panel per key of the RL specs, each run in its colour.
    #[test]
    fn compare_overlays_runs_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        for (k, mode) in ["hard", "soft"].into_iter().enumerate() {
            let run = dir.path().join(mode);
            std::fs::create_dir(&run).unwrap();
            let lines: String = (1..=80)
                .map(|s| {
                    format!(
                        "{}\n",
                        serde_json::json!({"step": s, "reward": 10.0 * k as f64 + s as f64})
                    )
                })
                .collect();
            std::fs::write(run.join("metrics.jsonl"), lines).unwrap();
            runs.push((mode.to_string(), run));
        }
        let png = dir.path().join("compare.png");
        draw_compare(&png, &runs, RL_PANELS).unwrap();
        let keys: usize = RL_PANELS.iter().map(|s| s.keys.len()).sum();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        let (w, h) = crate::plot::size(keys);
        println!("compare.png: {keys} panels, {}x{}", info.width, info.height);
        assert_eq!((info.width as i64, info.height as i64), (w, h));
        // Both runs' smoothed lines (80 points: smoothed), in the first two colours.
        for c in &PALETTE[..2] {
            let n = rgb.chunks(3).filter(|p| p == c).count();
            assert!(n > 100, "colour {c:?}: {n} pixels");
        }
    }
}
