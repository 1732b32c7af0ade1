//! What went into a rootfs: Kata's `/var/lib/osbuilder/osbuilder.yaml` and an SPDX 2.3
//! SBOM beside it. Both are derived from the same [`Manifest`] so they cannot disagree.

use std::fmt::Write as _;

use serde_json::json;

use crate::distro::PackageFormat;
use crate::pkg::record::InstalledPackage;

/// Kata's file-format-version of osbuilder.yaml.
pub const YAML_FORMAT: &str = "0.0.2";

#[derive(Clone, Debug)]
pub struct AgentInfo {
    pub url: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub is_init: bool,
}

#[derive(Clone, Debug)]
pub struct Manifest {
    pub osbuilder_version: String,
    /// How the rootfs was made: "distro" (a distro's packages) or "dracut" (the host's
    /// files, gathered by dracut).
    pub build_method: String,
    /// Seconds since the epoch (SOURCE_DATE_EPOCH, or now).
    pub created: i64,
    pub architecture: String,
    pub distro_name: String,
    pub distro_version: String,
    /// The distro's package set for the init mode (names, as requested).
    pub default_packages: Vec<String>,
    /// What the user added (Kata's EXTRA_PKGS).
    pub extra_packages: Vec<String>,
    /// What was actually installed, with versions and digests.
    pub resolved: Vec<InstalledPackage>,
    /// The package format of `resolved` (the purl type); None: unknown (`pkg:generic`).
    pub package_format: Option<PackageFormat>,
    /// Trust decisions beyond the default verification (e.g. unsigned packages).
    pub trust: Vec<String>,
    /// The Kata agent; None for a host (a rootfs built with a host profile runs no agent).
    pub agent: Option<AgentInfo>,
    /// The host profile the rootfs was built with (`osbuilder rootfs --profile`).
    pub profile: Option<String>,
    /// What the path filters left out (docs, man pages…); None: nothing was filtered.
    pub excluded: Option<crate::pkg::pathfilter::Excluded>,
}

/// `%Y-%m-%dT%H:%M:%S.%N+0000Z`, the format Kata's rootfs.sh writes (UTC).
pub fn kata_timestamp(epoch: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000000000+0000Z")
}

/// RFC 3339, for SPDX.
pub fn rfc3339(epoch: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Gregorian date and time of a Unix time (Howard Hinnant's days_from_civil, inverted).
fn civil(epoch: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs % 3600) / 60) as u32,
        (secs % 60) as u32,
    )
}

fn q(s: &str) -> String {
    // YAML double-quoted scalar: JSON string escaping is a valid subset.
    serde_json::to_string(s).expect("string serialises")
}

impl Manifest {
    pub fn to_yaml(&self) -> String {
        let mut y = String::from("---\n");
        let _ = writeln!(y, "osbuilder:");
        let _ = writeln!(y, "  url: {}", q("osbuilder (Rust)"));
        let _ = writeln!(y, "  version: {}", q(&self.osbuilder_version));
        let _ = writeln!(
            y,
            "rootfs-creation-time: {}",
            q(&kata_timestamp(self.created))
        );
        let description = match &self.profile {
            Some(p) => format!("osbuilder host rootfs (profile {p})"),
            None => "osbuilder rootfs".to_string(),
        };
        let _ = writeln!(y, "description: {}", q(&description));
        let _ = writeln!(y, "build-method: {}", q(&self.build_method));
        let _ = writeln!(y, "file-format-version: {}", q(YAML_FORMAT));
        let _ = writeln!(y, "architecture: {}", q(&self.architecture));
        let _ = writeln!(y, "base-distro:");
        let _ = writeln!(y, "  name: {}", q(&self.distro_name));
        let _ = writeln!(y, "  version: {}", q(&self.distro_version));
        let _ = writeln!(y, "  packages:");
        for (key, list) in [
            ("default", &self.default_packages),
            ("extra", &self.extra_packages),
        ] {
            let mut sorted = list.clone();
            sorted.sort();
            if sorted.is_empty() {
                let _ = writeln!(y, "    {key}: []");
            } else {
                let _ = writeln!(y, "    {key}:");
                for p in sorted {
                    let _ = writeln!(y, "      - {}", q(&p));
                }
            }
        }
        // Beyond Kata's fields: what was really installed, so the image can be audited,
        // and any trust decision beyond the default verification.
        if !self.trust.is_empty() {
            let _ = writeln!(y, "    trust:");
            for t in &self.trust {
                let _ = writeln!(y, "      - {}", q(t));
            }
        }
        if self.resolved.is_empty() {
            let _ = writeln!(y, "    resolved: []");
        } else {
            let _ = writeln!(y, "    resolved:");
            for p in &self.resolved {
                let _ = writeln!(y, "      - name: {}", q(&p.name));
                let _ = writeln!(y, "        version: {}", q(&p.version));
                let _ = writeln!(y, "        architecture: {}", q(&p.arch));
                let _ = writeln!(y, "        sha256: {}", q(&p.sha256));
                if !p.not_reproduced.is_empty() {
                    let _ = writeln!(y, "        not-reproduced:");
                    for n in &p.not_reproduced {
                        let _ = writeln!(y, "          - {}", q(n));
                    }
                }
                if !p.file_capabilities.is_empty() {
                    let _ = writeln!(y, "        file-capabilities:");
                    for n in &p.file_capabilities {
                        let _ = writeln!(y, "          - {}", q(n));
                    }
                }
            }
        }
        // The packages stay listed as installed; what their files lost is said here.
        if let Some(e) = &self.excluded {
            let _ = writeln!(y, "path-filters:");
            let _ = writeln!(y, "  rules:");
            for r in &e.rules {
                let _ = writeln!(y, "    - {}", q(r));
            }
            match (e.entries, e.bytes) {
                (Some(n), Some(b)) => {
                    let _ = writeln!(y, "  excluded-entries: {n}");
                    let _ = writeln!(y, "  excluded-bytes: {b}");
                }
                _ => {
                    let _ = writeln!(y, "  applied-by: {}", q("the distro's installer"));
                }
            }
        }
        if let Some(p) = &self.profile {
            let _ = writeln!(y, "host-profile: {}", q(p));
        }
        if let Some(agent) = &self.agent {
            let _ = writeln!(y, "agent:");
            let _ = writeln!(y, "  url: {}", q(&agent.url));
            let _ = writeln!(y, "  name: {}", q(&agent.name));
            let _ = writeln!(y, "  version: {}", q(&agent.version));
            let _ = writeln!(y, "  sha256: {}", q(&agent.sha256));
            let _ = writeln!(
                y,
                "  agent-is-init-daemon: {}",
                q(if agent.is_init { "yes" } else { "no" })
            );
        }
        y
    }

    /// SPDX 2.3 JSON: the rootfs as the described package, containing the distro packages
    /// and the agent.
    pub fn to_spdx(&self) -> String {
        use sha2::Digest;
        let purl_type = self
            .package_format
            .map_or("generic", PackageFormat::purl_type);
        let mut packages = vec![json!({
            "SPDXID": "SPDXRef-rootfs",
            "name": format!("{}-{}-rootfs", self.distro_name, self.distro_version),
            "versionInfo": self.osbuilder_version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
        })];
        let mut rels = vec![json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-rootfs",
        })];
        for (i, p) in self.resolved.iter().enumerate() {
            let id = format!("SPDXRef-Package-{i}");
            let purl = format!(
                "pkg:{}/{}/{}@{}?arch={}",
                purl_type, self.distro_name, p.name, p.version, p.arch
            );
            let mut pkg = json!({
                "SPDXID": id,
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": if p.url.is_empty() { "NOASSERTION".to_string() } else { p.url.clone() },
                "filesAnalyzed": false,
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}],
            });
            // A host package (dracut method) has no downloaded file to take a digest of.
            if !p.sha256.is_empty() {
                pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": p.sha256}]);
            }
            packages.push(pkg);
            rels.push(json!({"spdxElementId": "SPDXRef-rootfs", "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        }
        if let Some(agent) = &self.agent {
            packages.push(json!({
                "SPDXID": "SPDXRef-agent",
                "name": agent.name,
                "versionInfo": agent.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": agent.sha256}],
            }));
            rels.push(json!({"spdxElementId": "SPDXRef-rootfs", "relationshipType": "CONTAINS", "relatedSpdxElement": "SPDXRef-agent"}));
        }
        // The namespace must be unique per document: derive it from the content.
        let mut h = sha2::Sha256::new();
        h.update(self.to_yaml().as_bytes());
        let ns = hex::encode(&h.finalize()[..16]);
        let doc = json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("osbuilder-rootfs-{}-{}-{}", self.distro_name, self.distro_version, self.architecture),
            "documentNamespace": format!("urn:osbuilder:spdx:{ns}"),
            "creationInfo": {
                "created": rfc3339(self.created),
                "creators": [format!("Tool: osbuilder-{}", self.osbuilder_version)],
            },
            "packages": packages,
            "relationships": rels,
        });
        let mut s = serde_json::to_string_pretty(&doc).expect("json");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            osbuilder_version: "0.1.0".into(),
            build_method: "distro".into(),
            created: 1_700_000_000,
            architecture: "x86_64".into(),
            distro_name: "debian".into(),
            distro_version: "trixie".into(),
            default_packages: vec!["iptables".into(), "chrony".into()],
            extra_packages: vec![],
            resolved: vec![InstalledPackage {
                name: "chrony".into(),
                version: "4.6.1-3".into(),
                arch: "amd64".into(),
                sha256: "ab".repeat(32),
                size: 1,
                url: "http://mirror.invalid/pool/c/chrony.deb".into(),
                not_reproduced: vec!["journal catalog".into()],
                file_capabilities: Vec::new(),
            }],
            package_format: Some(PackageFormat::Deb),
            excluded: None,
            trust: vec![],
            agent: Some(AgentInfo {
                url: "osbuilder:reference-agent".into(),
                name: "kata-agent".into(),
                version: "0.1.0".into(),
                sha256: "cd".repeat(32),
                is_init: true,
            }),
            profile: None,
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(kata_timestamp(0), "1970-01-01T00:00:00.000000000+0000Z");
        assert_eq!(
            kata_timestamp(1_700_000_000),
            "2023-11-14T22:13:20.000000000+0000Z"
        );
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn yaml_has_kata_fields_sorted() {
        let y = sample().to_yaml();
        for needle in [
            "file-format-version: \"0.0.2\"",
            "architecture: \"x86_64\"",
            "    default:\n      - \"chrony\"\n      - \"iptables\"",
            "    extra: []",
            "agent-is-init-daemon: \"yes\"",
            "build-method: \"distro\"",
            "rootfs-creation-time: \"2023-11-14T22:13:20.000000000+0000Z\"",
            "        version: \"4.6.1-3\"",
            "        not-reproduced:\n          - \"journal catalog\"",
        ] {
            assert!(y.contains(needle), "missing {needle:?} in\n{y}");
        }
    }

    #[test]
    fn a_host_has_its_profile_and_no_agent() {
        let mut m = sample();
        m.agent = None;
        m.profile = Some("virtualization".into());
        let y = m.to_yaml();
        assert!(y.contains("host-profile: \"virtualization\""), "{y}");
        assert!(!y.contains("agent:"), "{y}");
        let v: serde_json::Value = serde_json::from_str(&m.to_spdx()).unwrap();
        assert_eq!(v["packages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn spdx_is_deterministic_and_lists_packages_and_agent() {
        let a = sample().to_spdx();
        assert_eq!(a, sample().to_spdx());
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        let pkgs = v["packages"].as_array().unwrap();
        assert_eq!(pkgs.len(), 3);
        assert_eq!(
            pkgs[1]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/chrony@4.6.1-3?arch=amd64"
        );
        let mut rpm = sample();
        rpm.package_format = Some(PackageFormat::Rpm);
        rpm.trust = vec!["unsigned packages".into()];
        assert!(rpm.to_spdx().contains("pkg:rpm/debian/chrony@"));
        assert!(
            rpm.to_yaml()
                .contains("    trust:\n      - \"unsigned packages\"\n")
        );
        let mut other = sample();
        other.agent.as_mut().unwrap().sha256 = "ef".repeat(32);
        let w: serde_json::Value = serde_json::from_str(&other.to_spdx()).unwrap();
        assert_ne!(v["documentNamespace"], w["documentNamespace"]);
    }
}
