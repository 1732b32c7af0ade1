//! The compatibility matrix: distro × arch × init mode, derived from `distros/`.
//!
//! Every command that targets a distro calls [`Matrix::check`] before doing any work, so a
//! request such as clearlinux on s390x fails at once, listing what is supported.

use std::fmt::Write as _;

use serde::Serialize;

use crate::arch::Arch;
use crate::distro::{Distro, DistroSet, InitMode};

/// A request as the user gave it: the init mode may be left to the distro's default.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub distro: &'a str,
    pub arch: Arch,
    pub init: Option<InitMode>,
}

/// A request the matrix accepted, with the defaults filled in.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    pub distro: &'a Distro,
    pub arch: Arch,
    pub init: InitMode,
}

/// One supported combination.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Cell {
    pub distro: String,
    pub arch: Arch,
    pub init: InitMode,
    /// True when this init mode is the distro's default.
    pub default_init: bool,
    pub default_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_life: Option<String>,
}

/// Why a request was refused. Shown to the user as is; the CLI exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

pub struct Matrix<'a> {
    distros: &'a DistroSet,
}

impl<'a> Matrix<'a> {
    pub fn new(distros: &'a DistroSet) -> Self {
        Matrix { distros }
    }

    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for d in self.distros.iter() {
            for arch in Arch::ALL {
                for init in InitMode::ALL {
                    if d.supports(arch, init) {
                        cells.push(Cell {
                            distro: d.name.clone(),
                            arch,
                            init,
                            default_init: d.default_init == init,
                            default_version: d.default_version.clone(),
                            end_of_life: d.end_of_life.clone(),
                        });
                    }
                }
            }
        }
        cells
    }

    /// Accept or refuse a request, before any work starts.
    pub fn check(&self, req: &Request<'_>) -> Result<Target<'a>, Unsupported> {
        let Some(distro) = self.distros.get(req.distro) else {
            return Err(Unsupported(format!(
                "unknown distro '{}'; known distros: {}",
                req.distro,
                self.distros.names().join(", ")
            )));
        };
        let init = req.init.unwrap_or(distro.default_init);
        if distro.supports(req.arch, init) {
            return Ok(Target {
                distro,
                arch: req.arch,
                init,
            });
        }
        let mut msg = String::new();
        if !distro.arches.contains(&req.arch) {
            let _ = write!(msg, "{} does not support {}", distro.name, req.arch);
        } else {
            let _ = write!(
                msg,
                "{} does not support init mode {} (on {})",
                distro.name, init, req.arch
            );
            if init == InitMode::Systemd && !distro.init_modes.contains(&InitMode::Systemd) {
                let _ = write!(
                    msg,
                    ": {} has no systemd, use --agent-init",
                    distro.pretty_name
                );
            }
        }
        let _ = write!(msg, ".\nSupported for {}:", distro.name);
        for arch in &distro.arches {
            let modes: Vec<String> = distro
                .init_modes
                .iter()
                .map(|m| {
                    if *m == distro.default_init {
                        format!("{m} (default)")
                    } else {
                        m.to_string()
                    }
                })
                .collect();
            let _ = write!(msg, "\n  {arch}: {}", modes.join(", "));
        }
        let _ = write!(msg, "\nSee `osbuilder matrix` for every distro.");
        Err(Unsupported(msg))
    }

    /// The matrix as a text table: one row per distro, one column per arch.
    pub fn table(&self) -> String {
        let header: Vec<String> = std::iter::once("distro (version)".to_string())
            .chain(Arch::ALL.iter().map(|a| a.to_string()))
            .collect();
        let mut rows = vec![header];
        for d in self.distros.iter() {
            let mut label = format!("{} ({})", d.name, d.default_version);
            if d.end_of_life.is_some() {
                label.push_str(" [EOL]");
            }
            let mut row = vec![label];
            for arch in Arch::ALL {
                let modes: Vec<String> = d
                    .init_modes
                    .iter()
                    .filter(|m| d.supports(arch, **m))
                    .map(|m| {
                        if *m == d.default_init {
                            format!("{m}*")
                        } else {
                            m.to_string()
                        }
                    })
                    .collect();
                row.push(if modes.is_empty() {
                    "-".into()
                } else {
                    modes.join(", ")
                });
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&rule.join("  "));
                out.push('\n');
            }
        }
        out.push_str("* default init mode; '-' unsupported.");
        for d in self.distros.iter() {
            if let Some(eol) = &d.end_of_life {
                let _ = write!(
                    out,
                    "\n{} reached end of life on {eol}; its mirror is frozen.",
                    d.pretty_name
                );
            }
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> DistroSet {
        DistroSet::embedded().unwrap()
    }

    #[test]
    fn clearlinux_on_s390x_is_refused_with_the_supported_list() {
        let set = set();
        let m = Matrix::new(&set);
        let err = m
            .check(&Request {
                distro: "clearlinux",
                arch: Arch::S390x,
                init: None,
            })
            .unwrap_err()
            .0;
        assert!(err.contains("clearlinux does not support s390x"), "{err}");
        assert!(
            err.contains("x86_64: systemd (default), agent-init"),
            "{err}"
        );
    }

    #[test]
    fn default_init_mode_applies() {
        let set = set();
        let m = Matrix::new(&set);
        let t = m
            .check(&Request {
                distro: "debian",
                arch: Arch::Aarch64,
                init: None,
            })
            .unwrap();
        assert_eq!(t.init, InitMode::Systemd);
        let t = m
            .check(&Request {
                distro: "alpine",
                arch: Arch::S390x,
                init: None,
            })
            .unwrap();
        assert_eq!(t.init, InitMode::AgentInit);
    }

    #[test]
    fn systemd_on_alpine_is_refused() {
        let set = set();
        let m = Matrix::new(&set);
        let err = m
            .check(&Request {
                distro: "alpine",
                arch: Arch::X86_64,
                init: Some(InitMode::Systemd),
            })
            .unwrap_err()
            .0;
        assert!(err.contains("has no systemd"), "{err}");
    }

    #[test]
    fn unknown_distro_lists_known_ones() {
        let set = set();
        let err = Matrix::new(&set)
            .check(&Request {
                distro: "gentoo",
                arch: Arch::X86_64,
                init: None,
            })
            .unwrap_err()
            .0;
        assert!(
            err.contains("alpine, azurelinux, clearlinux, debian, ubuntu"),
            "{err}"
        );
    }

    #[test]
    fn cells_cover_the_expected_matrix() {
        let set = set();
        let cells = Matrix::new(&set).cells();
        // debian, ubuntu: 4 arches × 2 modes; alpine: 4 × 1; clearlinux: 1 × 2;
        // azurelinux: 2 × 2.
        assert_eq!(cells.len(), 8 + 8 + 4 + 2 + 4);
        assert!(
            cells
                .iter()
                .any(|c| c.distro == "clearlinux" && c.arch == Arch::X86_64 && c.default_init)
        );
        assert!(
            !cells
                .iter()
                .any(|c| c.distro == "clearlinux" && c.arch == Arch::S390x)
        );
        assert!(
            !cells
                .iter()
                .any(|c| c.distro == "alpine" && c.init == InitMode::Systemd)
        );
    }

    #[test]
    fn table_marks_defaults_and_gaps() {
        let set = set();
        let t = Matrix::new(&set).table();
        let clear = t.lines().find(|l| l.starts_with("clearlinux")).unwrap();
        assert!(clear.contains("systemd*, agent-init"));
        assert!(clear.contains("[EOL]"));
        assert_eq!(clear.matches(" -").count(), 3, "{clear}");
    }
}
