//! A tiny PNG line-chart writer for training metrics (reward, accuracy, loss, ... over steps).
//!
//! Text is drawn with the public-domain font8x8 glyphs at twice their size, so plotting never
//! depends on the fonts installed on the machine (CI runners and laptops may have none). Panels
//! stack in one column, or in two when there are more than three. Long noisy series are drawn
//! twice by their callers: faint as logged, and smoothed with [`ema`] as TensorBoard smooths.

use std::path::Path;

use font8x8::{UnicodeFonts, BASIC_FONTS};
use softcot_core::{Error, Result};

/// One line on a panel; NaN or infinite points are skipped. A series with an empty name has no
/// legend entry (the faint raw line under a smoothed one).
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
    pub color: [u8; 3],
}

/// One chart with its own y axis; panels share the x axis range.
pub struct Panel<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series<'a>>,
}

/// Line colours for series told apart by colour: matplotlib's tab10, in order, cycled.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

const WIDTH: i64 = 800;
const PANEL_H: i64 = 360;
const FOOTER_H: i64 = 40;
// Panels in one column up to this many; two columns beyond.
const ONE_COLUMN_MAX: usize = 3;
// Text: font8x8 at 2x, 16 px a character.
const SCALE: i64 = 2;
const CHAR: i64 = 8 * SCALE;
// The plot area inside a panel: the title, two legend rows and the y label above it, tick
// numbers left of it (as wide as the widest) and below it.
const RIGHT: i64 = WIDTH - 32;
const TOP: i64 = 110;
const BOTTOM: i64 = PANEL_H - 36;
const INK: [u8; 3] = [20, 20, 20];
const GRID: [u8; 3] = [225, 225, 225];
// Below this many points each one gets a dot, so sparse evaluations stay visible.
const MARKER_MAX_POINTS: usize = 50;

/// Writes panels stacked vertically (shared x axis label `x_label`) into a PNG at `path`,
/// atomically ([`write_atomic`](softcot_core::io::fsutil::write_atomic)), so a reader never sees half a file.
pub fn write_png(path: &Path, x_label: &str, panels: &[Panel<'_>]) -> Result<()> {
    let err = |what: String| Error::io(format!("{}: {what}", path.display()));
    let canvas = render(x_label, panels);
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, canvas.w as u32, canvas.h as u32);
    encoder.set_color(png::ColorType::Rgb);
    let encode_err = |e: png::EncodingError| err(format!("encoding PNG: {e}"));
    let mut writer = encoder.write_header().map_err(encode_err)?;
    writer.write_image_data(&canvas.rgb).map_err(encode_err)?;
    writer.finish().map_err(encode_err)?;
    softcot_core::io::fsutil::write_atomic(path, &bytes)
}

/// Columns of a figure of `n` panels.
fn columns(n: usize) -> usize {
    if n > ONE_COLUMN_MAX {
        2
    } else {
        1
    }
}

/// Width and height of a figure of `n` panels.
pub fn size(n: usize) -> (i64, i64) {
    let cols = columns(n);
    (cols as i64 * WIDTH, n.div_ceil(cols) as i64 * PANEL_H + FOOTER_H)
}

fn render(x_label: &str, panels: &[Panel<'_>]) -> Canvas {
    let (w, h) = size(panels.len());
    let mut c = Canvas {
        w,
        h,
        rgb: vec![255; (w * h * 3) as usize],
    };
    let all_x = panels
        .iter()
        .flat_map(|p| &p.series)
        .flat_map(|s| finite(s).map(|p| p.0));
    let x_axis = Axis::new(all_x);
    let cols = columns(panels.len());
    for (i, panel) in panels.iter().enumerate() {
        let (col, row) = ((i % cols) as i64, (i / cols) as i64);
        draw_panel(&mut c, (col * WIDTH, row * PANEL_H), panel, &x_axis);
    }
    c.text((w - text_w(x_label)) / 2, h - FOOTER_H + 12, x_label, INK);
    c
}

/// Exponential moving average with TensorBoard's debiasing: s_t = w s_{t-1} + (1 - w) y_t from
/// s_0 = 0, divided by 1 - w^t, so the start is not pulled toward zero. Non-finite points are
/// left out (as TensorBoard does).
pub fn ema(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let mut acc = 0.0;
    let mut debias = 1.0;
    let finite = points.iter().filter(|(x, y)| x.is_finite() && y.is_finite());
    finite
        .map(|&(x, y)| {
            acc = weight * acc + (1.0 - weight) * y;
            debias *= weight;
            (x, acc / (1.0 - debias))
        })
        .collect()
}

/// The smoothing weight for `n` points: 0.6 (TensorBoard's default) up to about 75 points, rising
/// to 0.9 from 300 on, so that a long run's curve averages about as many steps per pixel.
pub fn ema_weight(n: usize) -> f64 {
    (1.0 - 30.0 / n.max(1) as f64).clamp(0.6, 0.9)
}

/// `c` mixed with three parts of white: the raw line under a smoothed one.
pub fn faint(c: [u8; 3]) -> [u8; 3] {
    c.map(|v| ((v as u16 + 3 * 255) / 4) as u8)
}

fn finite<'s>(s: &'s Series<'_>) -> impl Iterator<Item = (f64, f64)> + 's {
    s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite())
}

fn draw_panel(c: &mut Canvas, (x0, y0): (i64, i64), panel: &Panel<'_>, xa: &Axis) {
    let ya = Axis::new(panel.series.iter().flat_map(|s| finite(s).map(|p| p.1)));
    let y_labels: Vec<String> = ya.ticks.iter().map(|&t| ya.label(t)).collect();
    let widest = y_labels.iter().map(|l| text_w(l)).max().unwrap_or(0);
    let (left, right) = (x0 + 24 + widest, x0 + RIGHT);
    let (top, bottom) = (y0 + TOP, y0 + BOTTOM);
    for &t in &xa.ticks {
        let x = xa.px(t, left, right);
        c.rect(x, top, 1, bottom - top, GRID);
        c.rect(x, bottom, 1, 6, INK);
        let label = xa.label(t);
        c.text(x - text_w(&label) / 2, bottom + 10, &label, INK);
    }
    for (&t, label) in ya.ticks.iter().zip(&y_labels) {
        let y = ya.px(t, bottom, top);
        c.rect(left, y, right - left, 1, GRID);
        c.rect(left - 6, y, 6, 1, INK);
        c.text(left - 10 - text_w(label), y - CHAR / 2 + 1, label, INK);
    }
    c.rect(left, top, 1, bottom - top + 1, INK);
    c.rect(left, bottom, right - left + 1, 1, INK);
    c.text(x0 + 16, y0 + 12, panel.title, INK);
    c.text(x0 + 16, top - CHAR - 14, panel.y_label, INK);
    draw_legend(c, (x0, y0), right, panel);
    let mut empty = true;
    for s in &panel.series {
        let pts: Vec<(i64, i64)> = finite(s)
            .map(|(x, y)| (xa.px(x, left, right), ya.px(y, bottom, top)))
            .collect();
        empty &= pts.is_empty();
        for w in pts.windows(2) {
            c.line(w[0], w[1], s.color);
        }
        if pts.len() < MARKER_MAX_POINTS {
            pts.iter().for_each(|&p| c.dot(p, s.color));
        }
    }
    if empty {
        let msg = "no data";
        c.text((left + right - text_w(msg)) / 2, (top + bottom) / 2 - 8, msg, INK);
    }
}

/// The named series' swatches and names, right-aligned in up to two rows under the title (above
/// the plot area, so they never hide data); a row that is full wraps to the next.
fn draw_legend(c: &mut Canvas, (x0, y0): (i64, i64), right: i64, panel: &Panel<'_>) {
    let entry_w = |s: &Series<'_>| 22 + text_w(s.name) + 20;
    let named: Vec<&Series<'_>> = panel.series.iter().filter(|s| !s.name.is_empty()).collect();
    let room = right - x0 - 16;
    let mut rows: Vec<Vec<&Series<'_>>> = vec![Vec::new()];
    for s in named {
        let row = rows.last_mut().map_or(0, |r| r.iter().map(|e| entry_w(e)).sum::<i64>());
        if row > 0 && row + entry_w(s) > room {
            rows.push(Vec::new());
        }
        rows.last_mut().into_iter().for_each(|r| r.push(s));
    }
    for (i, row) in (0..).zip(&rows) {
        let y = y0 + 36 + i * (CHAR + 6);
        let mut x = right - row.iter().map(|e| entry_w(e)).sum::<i64>() + 20;
        for s in row {
            c.rect(x, y + CHAR / 2 - 2, 16, 5, s.color);
            c.text(x + 22, y, s.name, INK);
            x += entry_w(s);
        }
    }
}

/// An axis whose limits are widened to its first and last "nice" tick.
struct Axis {
    step: f64,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>) -> Axis {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (step, ticks) = nice_ticks(lo, hi);
        Axis { step, ticks }
    }

    /// Maps `v` onto pixels `p0..=p1`, clamped so stray values can never send lines far off-canvas.
    fn px(&self, v: f64, p0: i64, p1: i64) -> i64 {
        let (lo, hi) = (self.ticks[0], self.ticks[self.ticks.len() - 1]);
        let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        (p0 as f64 + t * (p1 - p0) as f64).round() as i64
    }

    /// The tick's number, as short as the step allows: `0.25`, `1200`, or `2.5e-6` on an axis
    /// whose step is below 0.001 or which reaches a million (learning rates, token counts).
    fn label(&self, v: f64) -> String {
        // Snap float noise around zero so it prints "0", not "-0.0".
        if v.abs() < self.step / 2.0 {
            return "0".into();
        }
        let step_exp = self.step.log10().floor();
        let largest = self.ticks.iter().fold(0f64, |m, t| m.max(t.abs()));
        if self.step < 1e-3 || largest >= 1e6 {
            // One precision for the whole axis: that of its largest tick at the step's resolution.
            let digits = (largest.log10().floor() - step_exp).clamp(0.0, 12.0) as usize;
            return format!("{v:.digits$e}");
        }
        let decimals = (-step_exp).clamp(0.0, 12.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Tick step and ticks (1, 2 or 5 x 10^k) covering `lo..=hi`: 4 to 7 of them where possible (7
/// lets 0..120 end at 120, not 150).
/// Empty, flat or non-finite ranges are padded or replaced so the axis stays drawable.
fn nice_ticks(lo: f64, hi: f64) -> (f64, Vec<f64>) {
    // A range too narrow for a nice step (flat series, one point) is widened around its value.
    let flat = hi - lo <= (hi.abs().max(lo.abs()) * 1e-9).max(1e-100);
    let pad = if flat { lo.abs().max(1.0) * 0.2 } else { 0.0 };
    let (lo, hi) = (lo - pad, hi + pad);
    let (lo, hi) = if (hi - lo).is_finite() && lo < hi {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let exp = ((hi - lo) / 5.0).log10().floor() as i32;
    let steps = (exp - 1..=exp + 1).flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)));
    // The epsilon keeps float noise (0.7 / 0.1 = 7.000000000000001) from adding a tick.
    let span = |step: f64| {
        (
            step,
            (lo / step + 1e-9).floor() as i64,
            (hi / step - 1e-9).ceil() as i64,
        )
    };
    // Smallest step first: the first with at most 7 ticks hugs the data most tightly. The largest
    // step (50 x 10^exp) exceeds the range, so one is always found; the fallback only avoids a panic.
    let (step, a, b) = steps.map(span).find(|(_, a, b)| b - a < 7).unwrap_or((1.0, 0, 1));
    (step, (a..=b).map(|i| i as f64 * step).collect())
}

fn text_w(s: &str) -> i64 {
    s.chars().count() as i64 * CHAR
}

/// An RGB8 image with clipped drawing primitives: nothing drawn off-canvas can panic.
struct Canvas {
    w: i64,
    h: i64,
    rgb: Vec<u8>,
}

impl Canvas {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..self.w).contains(&x) && (0..self.h).contains(&y) {
            let i = ((y * self.w + x) * 3) as usize;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// DDA line (one step per pixel along the major axis), stamping 2x2 squares so it is 2 px thick.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for i in 0..=n {
            let lerp = |a: i64, b: i64| a + ((b - a) as f64 * i as f64 / n as f64).round() as i64;
            self.rect(lerp(x0, x1), lerp(y0, y1), 2, 2, c);
        }
    }

    /// A filled disc 7 px across, built from horizontal runs.
    fn dot(&mut self, (x, y): (i64, i64), c: [u8; 3]) {
        for (dy, half) in (-3..=3).zip([1, 2, 3, 3, 3, 2, 1]) {
            self.rect(x - half, y + dy, 2 * half + 1, 1, c);
        }
    }

    /// font8x8 rows are one byte each, least significant bit leftmost; each bit a SCALE-pixel square.
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let glyph = BASIC_FONTS.get(ch).or_else(|| BASIC_FONTS.get('?')).unwrap_or_default();
            let gx = x + i as i64 * CHAR;
            for (row, bits) in (0..).zip(glyph) {
                for col in (0..8).filter(|col| bits >> col & 1 == 1) {
                    self.rect(gx + col * SCALE, y + row * SCALE, SCALE, SCALE, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: [u8; 3] = [220, 50, 47];
    const BLUE: [u8; 3] = [38, 110, 200];

    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn panel<'a>(title: &'a str, name: &'a str, points: &'a [(f64, f64)], color: [u8; 3]) -> Panel<'a> {
        Panel {
            title,
            y_label: title,
            series: vec![Series { name, points, color }],
        }
    }

    #[test]
    fn two_panels_decode_with_both_colors() {
        let reward: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, (i as f64 / 40.0).sin())).collect();
        let acc = [(0.0, 0.1), (50.0, 0.35), (100.0, 0.5), (150.0, 0.62), (199.0, 0.7)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.png");
        let panels = [
            panel("reward", "mean", &reward, RED),
            panel("accuracy", "val", &acc, BLUE),
        ];
        write_png(&path, "step", &panels).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), (WIDTH as u32, (2 * PANEL_H + FOOTER_H) as u32));
        assert_eq!(size(2), (WIDTH, 2 * PANEL_H + FOOTER_H));
        assert!(rgb.iter().any(|&b| b != 255));
        let has = |c: [u8; 3]| rgb.chunks(3).any(|p| p == c);
        assert!(has(RED) && has(BLUE));
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "temp file left behind");
    }

    #[test]
    fn ema_matches_a_hand_computation() {
        // w = 0.5 over 1, 2, 3 (a NaN between them left out):
        // s = 0.5, 1.25, 2.125; 1 - w^t = 0.5, 0.75, 0.875; s / (1 - w^t) = 1, 5/3, 17/7.
        let pts = [(0.0, 1.0), (1.0, f64::NAN), (2.0, 2.0), (3.0, 3.0)];
        let got = ema(&pts, 0.5);
        let want = [(0.0, 1.0), (2.0, 5.0 / 3.0), (3.0, 17.0 / 7.0)];
        println!("ema {got:?}");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(g.0 == w.0 && (g.1 - w.1).abs() < 1e-12, "{got:?}");
        }
        // A constant series stays constant from its first point (the debiasing's purpose).
        assert!(ema(&[(0.0, 7.0); 20], 0.9).iter().all(|p| (p.1 - 7.0).abs() < 1e-12));
        assert_eq!((ema_weight(10), ema_weight(120), ema_weight(4000)), (0.6, 0.75, 0.9));
        assert_eq!(faint([0, 255, 100]), [191, 255, 216]);
    }

    #[test]
    fn five_panels_fill_two_columns_each_with_its_series() {
        let colors: [[u8; 3]; 5] = [RED, BLUE, [44, 160, 44], [148, 103, 189], [140, 86, 75]];
        let pts: Vec<Vec<(f64, f64)>> = (0..5)
            .map(|k| {
                (0..100)
                    .map(|i| (i as f64, ((i * (k + 1)) as f64 / 30.0).sin()))
                    .collect()
            })
            .collect();
        let titles = ["a", "b", "c", "d", "e"];
        let panels: Vec<Panel> = (0..5)
            .map(|k| panel(titles[k], titles[k], &pts[k], colors[k]))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        write_png(&path, "step", &panels).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w as i64, h as i64), (2 * WIDTH, 3 * PANEL_H + FOOTER_H));
        // Panel k's colour appears inside its own cell's plot area (and, its legend aside, nowhere else).
        let count_in = |c: [u8; 3], (x0, y0): (i64, i64)| {
            let mut n = 0;
            for y in y0 + TOP..y0 + BOTTOM {
                for x in x0..x0 + WIDTH {
                    let i = ((y * w as i64 + x) * 3) as usize;
                    n += (rgb[i..i + 3] == c) as usize;
                }
            }
            n
        };
        for (k, &c) in colors.iter().enumerate() {
            let cell = ((k as i64 % 2) * WIDTH, (k as i64 / 2) * PANEL_H);
            let here = count_in(c, cell);
            let other = ((k as i64 + 1) % 2 * WIDTH, cell.1);
            println!("panel {k}: {here} pixels of its colour in its cell");
            assert!(here > 200 && count_in(c, other) == 0, "panel {k}: {here}");
        }
    }

    #[test]
    fn nice_ticks_for_common_ranges() {
        let ticks = |lo: f64, hi: f64, want: &[f64]| {
            let got = nice_ticks(lo, hi).1;
            let same = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-9);
            assert!(same, "{lo}..{hi}: {got:?}");
        };
        ticks(0.0, 1.0, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        ticks(0.0, 1000.0, &[0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        ticks(3.0, 97.0, &[0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        ticks(0.1, 0.7, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
        ticks(-0.3, 0.7, &[-0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8]);
        ticks(0.0, 120.0, &[0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]);
        for (lo, hi) in [(0.13, 0.87), (1e-5, 3e-5), (-7.0, 123456.0), (5.0, 5.0), (0.0, 0.0)] {
            let (step, t) = nice_ticks(lo, hi);
            let mantissa = step / 10f64.powf(step.log10().floor());
            let nice = [1.0, 2.0, 5.0].iter().any(|n| (mantissa - n).abs() < 1e-9);
            let slack = step * 1e-6;
            let covers = (4..=7).contains(&t.len()) && t[0] <= lo + slack && hi <= t[t.len() - 1] + slack;
            assert!(nice && covers, "{lo}..{hi}: step {step}, {t:?}");
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let bad = [(f64::NAN, 1.0), (1.0, f64::INFINITY), (2.0, f64::NEG_INFINITY)];
        let flat = [(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)];
        let huge = [(-1e308, 0.0), (1e308, 1.7e308), (1.0, 1.7e308)];
        let tiny = [(0.0, 0.0), (1.0, 1e-320)];
        let cases: [&[(f64, f64)]; 6] = [&[], &[(3.0, 0.5)], &flat, &bad, &huge, &tiny];
        for (i, points) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.png"));
            write_png(&path, "x", &[panel("y", "s", points, RED)]).unwrap();
            assert_eq!(decode(&path).0, WIDTH as u32);
        }
        write_png(&dir.path().join("none.png"), "x", &[]).unwrap();
        let labels: Vec<String> = [(0.0, 1.2e-5), (0.0, 3e6), (0.0, 0.5)]
            .iter()
            .map(|&(lo, hi)| {
                let a = Axis::new([lo, hi].into_iter());
                a.ticks.iter().map(|&t| a.label(t)).collect::<Vec<_>>().join(" ")
            })
            .collect();
        assert_eq!(
            labels,
            [
                "0 2.0e-6 4.0e-6 6.0e-6 8.0e-6 1.0e-5 1.2e-5",
                "0 5.0e5 1.0e6 1.5e6 2.0e6 2.5e6 3.0e6",
                "0 0.1 0.2 0.3 0.4 0.5"
            ]
        );
        let err = write_png(&dir.path().join("missing/dir/p.png"), "x", &[]).unwrap_err();
        assert!(err.msg.contains("missing/dir/p.png"), "{err}");
    }
}
