//! Charts as SVG, drawn on the server by plotters: lines of a rate per period, with a dashed
//! threshold line for each framework contract's KPI. Each chart has a table beside it.

use plotters::prelude::*;

pub struct Series {
    pub name: String,
    /// One value per period (`None`: nothing to divide by that period).
    pub values: Vec<Option<f64>>,
    /// A KPI maximum to draw as a dashed line in the series' colour.
    pub threshold: Option<f64>,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x6f, 0xb5),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x2e, 0x8b, 0x57),
    RGBColor(0x8e, 0x44, 0xad),
    RGBColor(0xc0, 0x39, 0x2b),
    RGBColor(0x55, 0x55, 0x55),
];

/// A line chart of percentages over `periods`; an empty string if there is nothing to draw.
pub fn percent_lines(title: &str, periods: &[String], series: &[Series]) -> String {
    if periods.is_empty() || series.is_empty() {
        return String::new();
    }
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied().chain(s.threshold))
        .fold(5.0_f64, f64::max);
    let top = (top * 1.15 / 5.0).ceil() * 5.0;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (720, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = periods.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .x_labels(n.min(12))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    periods.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.0}%"))
            .label_style(("sans-serif", 18))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(x, v)| v.map(|v| (x as f64, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3)));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
            if let Some(max) = s.threshold {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(-0.5, max), (n as f64 - 0.5, max)],
                        8,
                        5,
                        colour.stroke_width(2),
                    ))?
                    .label(format!("{} KPI max {max:.1}%", s.name))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 6, y)], colour.stroke_width(2)));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 17))
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => {
            tracing::error!(error = %e, "chart failed");
            String::new()
        }
    }
}
