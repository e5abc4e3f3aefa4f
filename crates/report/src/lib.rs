//! The performance report (issue 7): reads every `distsync-bench/1` result under
//! `docs/performance/results/runs/`, draws the charts as SVG and renders
//! `docs/performance/README.md` from its template. Every figure in the output comes from a result
//! file; a section without data says which command would measure it.

pub mod charts;
pub mod data;
pub mod render;
pub mod schema;

use anyhow::Context;
use std::path::{Path, PathBuf};

/// Inputs and outputs of one report build.
pub struct Paths<'a> {
    pub runs: &'a Path,
    pub template: &'a Path,
    pub steps: Option<&'a Path>,
    pub out: &'a Path,
    pub charts: &'a Path,
}

/// Validates every result, draws the charts, writes the markdown. Charts left from an earlier
/// build that this one did not draw are removed, so the directory never shows stale data.
pub fn build(paths: &Paths) -> anyhow::Result<Vec<PathBuf>> {
    let runs = schema::load_dir(paths.runs)?;
    let template = std::fs::read_to_string(paths.template)
        .with_context(|| format!("reading {}", paths.template.display()))?;
    let steps = match paths.steps {
        Some(p) if p.exists() => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                serde_json::from_str::<render::StepsLog>(&text)
                    .with_context(|| format!("{}: not a step log", p.display()))?,
            )
        }
        _ => None,
    };
    std::fs::create_dir_all(paths.charts)
        .with_context(|| format!("creating {}", paths.charts.display()))?;
    let href = relative_href(paths.out, paths.charts);
    let (markdown, written) = render::render(
        &template,
        &runs,
        steps.as_ref(),
        render::ChartOutput {
            dir: paths.charts,
            href: &href,
        },
    )?;
    for entry in std::fs::read_dir(paths.charts)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "svg") && !written.contains(&path) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    std::fs::write(paths.out, markdown)
        .with_context(|| format!("writing {}", paths.out.display()))?;
    Ok(written)
}

/// The link from the markdown file to the charts directory, when one is inside the other's
/// directory (the usual layout); otherwise the charts path as given.
fn relative_href(out: &Path, charts: &Path) -> String {
    let base = out.parent().unwrap_or(Path::new(""));
    charts
        .strip_prefix(base)
        .unwrap_or(charts)
        .to_string_lossy()
        .replace('\\', "/")
}
