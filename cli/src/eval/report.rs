//! Markdown tables of evaluation results, laid out like the paper's Tables 3-5: one row per model
//! and dataset, one column group per thinking mode at test time.

use softcot_core::eval::Decoding;

use super::{DecodingReport, EvalReport};
use crate::args::Think;

/// The column groups: thinking modes at test time.
const MODES: [Think; 3] = [Think::Hard, Think::Soft, Think::Fuzzy];

/// A share in percent with one decimal.
fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// `| a | b |` from cells.
fn line(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// The comparison table: one row per `(label, dataset, report)`; per mode the greedy pass@1 (of its
/// greedy decoding), and the pass@1 and pass@K (of its sample decoding), K the largest k of any
/// report; "-" where a decoding was not run.
pub fn markdown(rows: &[(&str, &str, &EvalReport)]) -> String {
    let k_max = rows
        .iter()
        .flat_map(|(_, _, r)| r.decodings.iter().flat_map(|d| d.pass_at_k.keys().copied()))
        .max();
    let k_name = k_max.map_or_else(|| "pass@k".to_string(), |k| format!("pass@{k}"));
    let mut header = vec!["model".to_string(), "dataset".to_string()];
    for mode in MODES.map(Think::name) {
        header.extend([
            format!("{mode} greedy pass@1"),
            format!("{mode} pass@1"),
            format!("{mode} {k_name}"),
        ]);
    }
    let mut rule = vec!["---".to_string(); 2];
    rule.extend(vec!["---:".to_string(); 3 * MODES.len()]);
    let mut out = line(&header) + &line(&rule);
    for &(label, dataset, report) in rows {
        let mut cells = vec![label.to_string(), dataset.to_string()];
        for mode in MODES.map(Think::mode) {
            let greedy = report.get(Decoding::new(mode, true));
            let sample = report.get(Decoding::new(mode, false));
            let pass_k = sample.and_then(|d| d.pass_at_k.get(&k_max?));
            cells.extend([
                greedy.map_or("-".into(), |d| pct(d.pass1)),
                sample.map_or("-".into(), |d| pct(d.pass1)),
                pass_k.map_or("-".into(), |&v| pct(v)),
            ]);
        }
        out += &line(&cells);
    }
    out
}

/// Every metric of every decoding of one report, one row per decoding.
pub fn details(report: &EvalReport) -> String {
    let header = [
        "decoding",
        "problems",
        "samples",
        "pass@1",
        "pass@k",
        "think tokens",
        "extracted",
        "stops",
    ];
    let mut out = line(&header.map(String::from)) + &line(&["---"; 8].map(String::from));
    for d in &report.decodings {
        out += &line(&detail_cells(d));
    }
    out
}

fn detail_cells(d: &DecodingReport) -> [String; 8] {
    let pass_at: Vec<String> = d.pass_at_k.iter().map(|(k, &v)| format!("@{k} {}", pct(v))).collect();
    let stops: Vec<String> = d.stops.iter().map(|(why, n)| format!("{why} {n}")).collect();
    [
        d.decoding.name().to_string(),
        d.problems.to_string(),
        d.samples.to_string(),
        pct(d.pass1),
        if pass_at.is_empty() {
            "-".into()
        } else {
            pass_at.join(", ")
        },
        format!("{:.1}", d.mean_think_tokens),
        pct(d.extracted),
        stops.join(", "),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use softcot_core::think::ThinkMode;

    fn decoding(d: Decoding, pass1: f64, pass_at_k: &[(usize, f64)]) -> DecodingReport {
        DecodingReport {
            decoding: d,
            problems: 2,
            samples: if d.greedy { 1 } else { 4 },
            pass1,
            pass_at_k: pass_at_k.iter().copied().collect(),
            mean_think_tokens: 3.5,
            extracted: 0.5,
            stops: BTreeMap::from([("budget", 2)]),
            correct: vec![1, 0],
            entropy: vec![2.0, 1.5],
            entropy_rows: vec![2, 1],
        }
    }

    #[test]
    fn the_table_has_a_group_per_mode_and_dashes_for_missing_decodings() {
        let report = EvalReport {
            lines: vec![1, 2],
            decodings: vec![
                decoding(Decoding::new(ThinkMode::Hard, true), 0.5, &[]),
                decoding(Decoding::new(ThinkMode::Soft, false), 0.25, &[(1, 0.25), (4, 0.5)]),
            ],
        };
        let table = markdown(&[("base", "gsm8k", &report)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("| model | dataset | hard greedy pass@1 | hard pass@1 | hard pass@4 |"));
        assert_eq!(
            lines[2],
            "| base | gsm8k | 50.0 | - | - | - | 25.0 | 50.0 | - | - | - |"
        );
        let details = details(&report);
        assert!(details.contains("| soft-sample | 2 | 4 | 25.0 | @1 25.0, @4 50.0 | 3.5 | 50.0 | budget 2 |"));
    }
}
