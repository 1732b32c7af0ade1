//! The image-spec documents osbuilder writes and reads: descriptors, image manifests and
//! image indexes, as plain serde types. Field order is fixed and annotation maps are sorted,
//! so `to_json` is canonical: the same document always has the same bytes and digest.
//! Unknown fields are ignored on reading (the spec requires it); `mediaType` is always
//! written (registries classify documents by it).
//!
//! The field order is the one of the image-spec's Go types (descriptor: mediaType, digest,
//! size, annotations, platform, artifactType), which is how containers/image re-encodes a
//! list: `skopeo copy --preserve-digests` compares its re-encoding with our bytes and
//! refuses the copy if they differ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The empty descriptor's media type and content (`{}`).
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONTENT: &[u8] = b"{}";

/// ironcore-image's types (its `image.go`), so ironcore consumers read our images.
pub const IRONCORE_CONFIG: &str = "application/vnd.ironcore.image.config.v1+json";
pub const IRONCORE_ROOTFS: &str = "application/vnd.ironcore.image.rootfs";
pub const IRONCORE_KERNEL: &str = "application/vnd.ironcore.image.kernel";
pub const IRONCORE_INITRAMFS: &str = "application/vnd.ironcore.image.initramfs";
/// A tar of the tree is a filesystem layer in the ordinary OCI sense.
pub const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The manifests' `artifactType` (ironcore ignores it; registries and oras show it).
pub const OS_IMAGE_ARTIFACT: &str = "application/vnd.osbuilder.os-image.v1";
pub const SPDX: &str = "application/spdx+json";

/// Standard annotation keys.
pub const TITLE: &str = "org.opencontainers.image.title";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const VERSION: &str = "org.opencontainers.image.version";
/// Our own keys (reverse-DNS of the project name, as the spec asks for non-standard keys).
pub const ANN_PREFIX: &str = "dev.osbuilder.";
pub const ANN_VARIANT: &str = "dev.osbuilder.variant";

/// Accept header for manifest GETs: OCI first, Docker's for registries that convert.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    pub fn is_index(&self) -> bool {
        self.media_type == INDEX || self.media_type == DOCKER_LIST
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: INDEX.to_string(),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// Canonical bytes of a document: compact JSON, fields in declaration order, maps sorted.
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("spec types always serialize")
}

/// RFC 3339 UTC time of a Unix timestamp (for `org.opencontainers.image.created`).
pub use crate::provision::manifest::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_canonical_and_keeps_media_type() {
        let mut d = Descriptor::new(MANIFEST, Digest::of(b"x"), 1);
        d.annotations.insert("z".into(), "1".into());
        d.annotations.insert("a".into(), "2".into());
        d.platform = Some(Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        });
        let idx = Index::new(vec![d]);
        let s = String::from_utf8(to_json(&idx)).unwrap();
        assert!(s.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"#), "{s}");
        assert!(s.contains(r#""annotations":{"a":"2","z":"1"}"#), "{s}");
        assert!(!s.contains("variant"), "{s}");
        let back: Index = serde_json::from_slice(s.as_bytes()).unwrap();
        assert_eq!(to_json(&back), s.as_bytes());
    }
}
