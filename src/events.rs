//! What a long-running job tells its caller while it works: a stage started or finished,
//! progress inside a stage, a file written, a warning. The library only emits [`Event`]s
//! into a [`Sink`]; the CLI decides how they look (progress bars on a terminal, nothing when
//! piped, one JSON object per line with `--json`, a summary table at the end). Library code
//! that would otherwise print hands its messages to the sink instead.

use serde::Serialize;

/// The long steps of a build, in pipeline order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Read the signed repository index and choose the packages.
    Resolve,
    /// Fetch package files into the download cache.
    Download,
    /// Install the packages into a staged root.
    Extract,
    /// Add the agent, units, osbuilder.yaml and the SBOM.
    Provision,
    /// Write an initrd or a disk image.
    Pack,
    /// Pack a release tarball (`kata-static-rootfs-*.tar.zst`).
    Compress,
    /// Copy artifacts into a release tree and write its checksums.
    Release,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Resolve => "resolve",
            Stage::Download => "download",
            Stage::Extract => "extract",
            Stage::Provision => "provision",
            Stage::Pack => "pack",
            Stage::Compress => "compress",
            Stage::Release => "release",
        }
    }
}

/// One thing that happened. `job` names what the event is about (`initrd/x86_64`,
/// `x86_64/kata-debian-trixie.initrd`, `release`).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event")]
pub enum Event {
    /// A stage began; `total` is the work to do (bytes) when known.
    #[serde(rename = "stage-start")]
    Start {
        job: String,
        stage: Stage,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// Part of a stage is done: `done` out of the start's `total`.
    #[serde(rename = "progress")]
    Progress {
        job: String,
        stage: Stage,
        done: u64,
    },
    /// A stage ended. `cached`: its result was taken from the stage cache; `bytes`: what it
    /// moved (downloaded bytes for `download`), when that is meaningful.
    #[serde(rename = "stage-finish")]
    Finish {
        job: String,
        stage: Stage,
        seconds: f64,
        cached: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A file was written under its final name.
    #[serde(rename = "artifact")]
    Artifact {
        job: String,
        path: String,
        size: u64,
        sha256: String,
    },
    /// Something worth a line in the log.
    #[serde(rename = "note")]
    Note { job: String, message: String },
    /// Something the user should look at; the job goes on.
    #[serde(rename = "warning")]
    Warning { job: String, message: String },
}

/// Where events go. Implemented for closures, so `&|e| …` is a sink.
pub trait Sink: Sync {
    fn emit(&self, e: Event);
}

impl<F: Fn(Event) + Sync> Sink for F {
    fn emit(&self, e: Event) {
        self(e)
    }
}

/// A sink that drops everything.
pub struct Silent;

impl Sink for Silent {
    fn emit(&self, _: Event) {}
}

/// A sink bound to one job, with shorthands for the common events.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub name: &'a str,
    pub sink: &'a dyn Sink,
}

impl<'a> Job<'a> {
    pub fn new(name: &'a str, sink: &'a dyn Sink) -> Job<'a> {
        Job { name, sink }
    }

    pub fn note(&self, message: impl Into<String>) {
        self.sink.emit(Event::Note {
            job: self.name.to_string(),
            message: message.into(),
        });
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.sink.emit(Event::Warning {
            job: self.name.to_string(),
            message: message.into(),
        });
    }

    /// Start `stage`; the returned guard reports its end.
    pub fn start(&self, stage: Stage, total: Option<u64>) -> Running<'a> {
        self.sink.emit(Event::Start {
            job: self.name.to_string(),
            stage,
            total,
        });
        Running {
            job: *self,
            stage,
            started: std::time::Instant::now(),
        }
    }

    pub fn progress(&self, stage: Stage, done: u64) {
        self.sink.emit(Event::Progress {
            job: self.name.to_string(),
            stage,
            done,
        });
    }

    /// A stage whose result came from the cache: only its (cached) finish.
    pub fn cached(&self, stage: Stage, detail: Option<String>) {
        self.sink.emit(Event::Finish {
            job: self.name.to_string(),
            stage,
            seconds: 0.0,
            cached: true,
            bytes: None,
            detail,
        });
    }
}

/// A stage in progress (see [`Job::start`]).
pub struct Running<'a> {
    job: Job<'a>,
    stage: Stage,
    started: std::time::Instant,
}

impl Running<'_> {
    pub fn progress(&self, done: u64) {
        self.job.progress(self.stage, done);
    }

    pub fn finish(self, cached: bool, bytes: Option<u64>, detail: Option<String>) {
        self.job.sink.emit(Event::Finish {
            job: self.job.name.to_string(),
            stage: self.stage,
            seconds: self.started.elapsed().as_secs_f64(),
            cached,
            bytes,
            detail,
        });
    }

    /// Finished, built (not cached), nothing more to say.
    pub fn done(self) {
        self.finish(false, None, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn events_serialise_one_object_each_with_their_kind() {
        let seen = Mutex::new(Vec::new());
        let sink = |e: Event| {
            seen.lock()
                .unwrap()
                .push(serde_json::to_string(&e).unwrap())
        };
        let job = Job::new("initrd/x86_64", &sink);
        job.start(Stage::Download, Some(10))
            .finish(false, Some(10), None);
        job.warn("careful");
        let seen = seen.into_inner().unwrap();
        assert_eq!(
            seen[0],
            r#"{"event":"stage-start","job":"initrd/x86_64","stage":"download","total":10}"#
        );
        assert!(seen[1].starts_with(
            r#"{"event":"stage-finish","job":"initrd/x86_64","stage":"download","seconds":"#
        ));
        assert!(
            seen[1].ends_with(r#","cached":false,"bytes":10}"#),
            "{}",
            seen[1]
        );
        assert_eq!(
            seen[2],
            r#"{"event":"warning","job":"initrd/x86_64","message":"careful"}"#
        );
    }
}
