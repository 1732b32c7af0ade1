//! How the CLI shows a job's events ([`crate::events`]): progress bars on a terminal, only
//! warnings when stderr is piped, or with `--json` one JSON object per line on stdout for
//! CI (stage start/finish, artifact, warning, note, and a final `summary` or `error`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, Sink, Stage};

enum Mode {
    /// Bars on stderr (a terminal).
    Bars(MultiProgress),
    /// Warnings only (stderr is not a terminal).
    Quiet,
    /// JSON lines on stdout.
    Json,
}

/// The CLI's sink.
pub struct Render {
    mode: Mode,
    bars: Mutex<HashMap<(String, Stage), ProgressBar>>,
    pub started: Instant,
}

impl Render {
    pub fn new(json: bool) -> Render {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Quiet
        };
        Render {
            mode,
            bars: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    pub fn json(&self) -> bool {
        matches!(self.mode, Mode::Json)
    }

    /// Print a line without breaking the bars.
    fn line(&self, s: &str) {
        match &self.mode {
            Mode::Bars(mp) => {
                let _ = mp.println(s);
            }
            _ => eprintln!("{s}"),
        }
    }

    /// A JSON object on stdout (JSON mode only).
    pub fn json_line(&self, v: &serde_json::Value) {
        if self.json() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
    }

    /// Report a failure: an `error` event in JSON mode (the message also goes to stderr).
    pub fn error(&self, e: &anyhow::Error) {
        self.clear();
        self.json_line(&serde_json::json!({"event": "error", "message": format!("{e:#}")}));
    }

    /// Remove what is still drawn.
    pub fn clear(&self) {
        if let Mode::Bars(mp) = &self.mode {
            let _ = mp.clear();
        }
    }

    fn bar(&self, job: &str, stage: Stage, total: Option<u64>) -> Option<ProgressBar> {
        let Mode::Bars(mp) = &self.mode else {
            return None;
        };
        let b = match total {
            Some(t) if t > 0 => {
                let b = mp.add(ProgressBar::new(t));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:<44} [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("template")
                    .progress_chars("=> "),
                );
                b
            }
            _ => {
                let b = mp.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{prefix:<44} {spinner} {elapsed}")
                        .expect("template"),
                );
                b.enable_steady_tick(std::time::Duration::from_millis(200));
                b
            }
        };
        b.set_prefix(format!("{job} {}", stage.name()));
        Some(b)
    }
}

impl Sink for Render {
    fn emit(&self, e: Event) {
        if self.json() {
            if !matches!(e, Event::Progress { .. }) {
                self.json_line(&serde_json::to_value(&e).unwrap_or_default());
            }
            return;
        }
        match e {
            Event::Start { job, stage, total } => {
                if let Some(b) = self.bar(&job, stage, total) {
                    self.bars
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((job, stage), b);
                }
            }
            Event::Progress { job, stage, done } => {
                if let Some(b) = self
                    .bars
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&(job, stage))
                {
                    b.set_position(done);
                }
            }
            Event::Finish {
                job,
                stage,
                seconds,
                cached,
                detail,
                ..
            } => {
                let bar = self
                    .bars
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(job.clone(), stage));
                if let Mode::Bars(_) = &self.mode {
                    if let Some(b) = bar {
                        b.finish_and_clear();
                    }
                    let how = if cached {
                        "cached".to_string()
                    } else {
                        format!("{seconds:.1} s")
                    };
                    self.line(&format!(
                        "  {:<44} {how}{}",
                        format!("{job} {}", stage.name()),
                        detail.map(|d| format!("  ({d})")).unwrap_or_default()
                    ));
                }
            }
            Event::Artifact { .. } => {}
            Event::Note { job, message } => {
                if let Mode::Bars(_) = &self.mode {
                    self.line(&format!("  {job}: {message}"));
                }
            }
            Event::Warning { job, message } => {
                self.line(&format!("osbuilder: warning: {job}: {message}"));
            }
        }
    }
}

/// `rootfs`'s sink: notes and warnings as `osbuilder: …` lines on stderr.
pub struct Lines;

impl Sink for Lines {
    fn emit(&self, e: Event) {
        match e {
            Event::Note { message, .. } => eprintln!("osbuilder: {message}"),
            Event::Warning { message, .. } => eprintln!("osbuilder: warning: {message}"),
            _ => {}
        }
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}
