//! `journeyctl preview [--out DIR]`: every message with sample data, for review in a browser.
//! Uses the templates as configured (JOURNEY_TEMPLATES_DIR, JOURNEY_TIMEZONE); needs no
//! database and sends nothing.

use std::path::Path;

use crate::config::{ConfigError, Settings};
use crate::exit::ExitStatus;
use crate::templates::Templates;

pub(crate) fn preview(settings: &Settings, out: &Path) -> anyhow::Result<ExitStatus> {
    let templates = Templates::load(settings.templates_dir.as_deref(), settings.timezone)
        .map_err(|e| ConfigError::new(format!("templates cannot be loaded: {e:#}")))?;
    let written = crate::preview::write_preview(&templates, out)?;
    crate::outln!(
        "wrote {} files; open {} in a browser",
        written.len(),
        out.join("index.html").display()
    );
    Ok(ExitStatus::Ok)
}
