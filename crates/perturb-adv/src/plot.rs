//! Line charts as PNG (plotters' bitmap backend). Text is drawn with DejaVu Sans, embedded in
//! the binary (assets/DejaVuSans.ttf, Bitstream Vera licence in assets/DejaVuSans-LICENSE.txt),
//! because a fresh machine may have no system font at all.

use std::path::Path;
use std::sync::OnceLock;

use image::ImageEncoder;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the embedded font once per process.
fn ensure_font() -> std::result::Result<(), String> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        register_font(FAMILY, FontStyle::Normal, FONT).map_err(|_| "the embedded font does not parse".into())
    })
    .clone()
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Dashed instead of solid (for predictions and references).
    pub dashed: bool,
}

impl Series {
    /// A solid line.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, dashed: false }
    }
    /// A dashed line.
    pub fn dashed(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, dashed: true }
    }
}

/// Distinct, print-friendly colours (Tableau 10).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Axis range covering every finite point, padded by 5% (a flat range gets +-0.5).
fn extent(series: &[Series], pick: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let vals = series.iter().flat_map(|s| s.points.iter().map(&pick)).filter(|v| v.is_finite());
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// A tick label: up to 4 significant decimals, no trailing zeros, never "-0".
fn tick(v: f64) -> String {
    if v.abs() < 1e-9 {
        return "0".into();
    }
    let s = if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.4}") };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Draws `series` as a 900x600 PNG at `path`. `y_range` fixes the y axis (e.g. accuracy in
/// [0, 1]); otherwise it fits the data.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
) -> Result<()> {
    let err = |msg: String| Error::Plot { path: path.to_path_buf(), msg };
    ensure_font().map_err(err)?;
    // Drawn into memory, then written to a temporary file and renamed: an interrupted run
    // leaves the previous figure or none, never a truncated PNG.
    let (w, h) = (900u32, 600u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw(&mut rgb, (w, h), title, x_desc, y_desc, series, y_range).map_err(|e| err(e.to_string()))?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ColorType::Rgb8)
        .map_err(|e| err(e.to_string()))?;
    perturb_nn::write_atomic(path, &png).map_err(|e| err(e.to_string()))
}

fn draw(
    rgb: &mut [u8],
    size: (u32, u32),
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = extent(series, |p| p.0);
    let (y0, y1) = y_range.unwrap_or_else(|| extent(series, |p| p.1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        let style = colour.stroke_width(2);
        let anno = if s.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))?
        };
        anno.label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        if pts.len() <= 25 && !s.dashed {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    if series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_a_whole_png_written_atomically() {
        let dir = std::env::temp_dir().join(format!("perturb-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("chart.png");
        std::fs::write(&path, b"an older, longer file that the chart replaces whole").expect("old file");
        let series = [Series::line("acc", vec![(0.0, 1.0), (0.1, 0.6), (0.3, 0.2)])];
        line_chart(&path, "accuracy", "eps", "accuracy", &series, Some((0.0, 1.0))).expect("drawn");
        let bytes = std::fs::read(&path).expect("read back");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        assert_eq!(&bytes[16..24], &[0, 0, 3, 132, 0, 0, 2, 88]);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names, vec!["chart.png".to_string()], "no temporary file left behind");
        // A folder that does not exist is an error naming the file, not a panic.
        let missing = dir.join("no/such/dir/chart.png");
        let e = line_chart(&missing, "t", "x", "y", &series, None).unwrap_err().to_string();
        assert!(e.contains("chart.png"), "{e}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
