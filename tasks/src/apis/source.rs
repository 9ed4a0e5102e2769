//! Objects read from manifest files: multi-document YAML, JSON, `kind: List`, objects as a
//! cluster returns them, and Helm 3 release Secrets.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use serde_yaml::Value;

use super::{ApiError, ObjectRef};

/// The annotation `kubectl apply` keeps the applied manifest in. The API server converts stored
/// objects to the version it serves, so for an object read back from a cluster only this says
/// which apiVersion its owner writes.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Secret type Helm 3 stores a release in.
const HELM_RELEASE_TYPE: &str = "helm.sh/release.v1";

/// A decompressed Helm release larger than this is refused rather than read into memory: Helm
/// keeps releases in Secrets of at most 1 MiB, so this only stops a gzip bomb.
const MAX_RELEASE_BYTES: u64 = 256 * 1024 * 1024;

/// How [`scan_path_with`] reads objects.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Annotations that, like [`LAST_APPLIED`], hold the manifest an object was applied from
    /// (e.g. kapp's `kapp.k14s.io/original`); tried after [`LAST_APPLIED`], in this order.
    pub extra_annotations: Vec<String>,
}

/// One Kubernetes object found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestObject {
    /// The object, with the apiVersion and kind that count.
    pub object: ObjectRef,
    /// The file path, or `helm:NAMESPACE/RELEASE` for an object of a Helm release.
    pub source: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// The YAML document of `file` it was in, counted from 1.
    pub document: usize,
}

/// What [`scan_path`] found: every object it could read, and an error for each file or
/// document it could not (it never stops at the first).
#[derive(Debug, Default)]
pub struct Scan {
    /// The objects, in file order (files sorted by path) and document order.
    pub objects: Vec<ManifestObject>,
    /// One error per unreadable file, directory or document.
    pub errors: Vec<ApiError>,
}

/// Reads the objects of `path`, a file or a directory (recursively: files ending `.yaml`, `.yml`
/// or `.json`). A file named directly is read whatever its name. Documents that are not
/// Kubernetes objects (no string `apiVersion` and `kind`) are ignored.
pub fn scan_path(path: &Path) -> Scan {
    scan_path_with(path, &ScanOptions::default())
}

/// [`scan_path`], with options.
pub fn scan_path_with(path: &Path, options: &ScanOptions) -> Scan {
    let mut scan = Scan::default();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => scan_dir(path, options, &mut scan),
        Ok(_) => scan_file(path, options, &mut scan),
        Err(source) => scan.errors.push(ApiError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
    scan
}

fn scan_dir(dir: &Path, options: &ScanOptions, scan: &mut Scan) {
    let read = |source| ApiError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return scan.errors.push(read(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => paths.push(e.path()),
            Err(e) => scan.errors.push(read(e)),
        }
    }
    // Sorted, so that findings come in the same order on every machine.
    paths.sort();
    for p in paths {
        // symlink_metadata: a link to a directory is not followed, so a loop cannot recurse
        // forever; a link to a file is read like the file.
        let is_dir = std::fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if is_dir {
            scan_dir(&p, options, scan);
        } else if is_manifest_name(&p) && p.is_file() {
            scan_file(&p, options, scan);
        }
    }
}

fn is_manifest_name(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn scan_file(file: &Path, options: &ScanOptions, scan: &mut Scan) {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(source) => {
            return scan.errors.push(ApiError::Read {
                path: file.to_path_buf(),
                source,
            })
        }
    };
    let source = file.display().to_string();
    let mut found = Found {
        file,
        options,
        scan,
    };
    found.documents(&text, &source, None);
}

/// Where objects of one file go, with what they need to name themselves.
struct Found<'a> {
    file: &'a Path,
    options: &'a ScanOptions,
    scan: &'a mut Scan,
}

impl Found<'_> {
    fn error(&mut self, document: usize, problem: String) {
        self.scan.errors.push(ApiError::Document {
            file: self.file.to_path_buf(),
            document,
            problem,
        });
    }

    /// Every document of `text`. `helm` is the release (namespace, name) when `text` is a
    /// release's manifest: its objects are named after the release, and its document numbers
    /// are those of the Secret's document.
    fn documents(&mut self, text: &str, source: &str, helm: Option<(&str, usize)>) {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let document = helm.map_or(i + 1, |(_, d)| d);
            match Value::deserialize(doc) {
                Ok(value) => self.value(value, source, document, helm.map(|(ns, _)| ns)),
                Err(e) => {
                    let what = match helm {
                        Some(_) => format!("{source}, manifest document {}: {e}", i + 1),
                        None => format!("not YAML or JSON: {e}"),
                    };
                    self.error(document, what);
                    // The parser cannot resynchronise after a syntax error; what follows in
                    // this file is not read.
                    break;
                }
            }
        }
    }

    fn value(&mut self, value: Value, source: &str, document: usize, helm_ns: Option<&str>) {
        let (Some(api_version), Some(kind)) =
            (str_at(&value, &["apiVersion"]), str_at(&value, &["kind"]))
        else {
            return;
        };
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            match value.get("items") {
                Some(Value::Sequence(items)) => {
                    // The API server's typed lists (DeploymentList) leave apiVersion and kind
                    // out of their items: they are the list's.
                    let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
                    for mut item in items.clone() {
                        if let (Some(k), Value::Mapping(m)) = (item_kind, &mut item) {
                            let key = |k: &str| Value::String(k.to_string());
                            m.entry(key("apiVersion"))
                                .or_insert_with(|| key(api_version));
                            m.entry(key("kind")).or_insert_with(|| key(k));
                        }
                        self.value(item, source, document, helm_ns);
                    }
                }
                Some(Value::Null) | None => {}
                Some(_) => self.error(document, format!("{kind}: `items` is not a list")),
            }
            return;
        }
        if helm_ns.is_none()
            && api_version == "v1"
            && kind == "Secret"
            && str_at(&value, &["type"]) == Some(HELM_RELEASE_TYPE)
        {
            return self.helm_release(&value, document);
        }
        let (api_version, kind) = match self.applied(&value) {
            // A controller copies its object's annotations to the objects it makes (a
            // Deployment's to its ReplicaSets): one naming another kind is not about this one.
            Ok(Some((v, k))) if k == kind => (v, k),
            Ok(_) => (api_version.to_string(), kind.to_string()),
            Err(problem) => return self.error(document, problem),
        };
        let namespace = str_at(&value, &["metadata", "namespace"])
            .or(helm_ns)
            .map(str::to_string);
        let name = str_at(&value, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        self.scan.objects.push(ManifestObject {
            object: ObjectRef {
                api_version,
                kind,
                namespace,
                name,
            },
            source: source.to_string(),
            file: self.file.to_path_buf(),
            document,
        });
    }

    /// The apiVersion and kind of the manifest the object was applied from, when an annotation
    /// keeps it: that, not the served version, is what the owner will apply again.
    fn applied(&self, value: &Value) -> Result<Option<(String, String)>, String> {
        applied_type(
            |key| str_at(value, &["metadata", "annotations", key]),
            self.options,
        )
    }

    /// A Helm 3 release Secret: `data.release` is base64 (the Secret's encoding) of base64
    /// (Helm's) of gzip of the release JSON, whose `manifest` is the release's YAML.
    fn helm_release(&mut self, secret: &Value, document: usize) {
        let secret_name = str_at(secret, &["metadata", "name"])
            .unwrap_or("?")
            .to_string();
        match decode_release(secret) {
            Ok(release) => {
                let source = format!("helm:{}/{}", release.namespace, release.name);
                self.documents(
                    &release.manifest,
                    &source,
                    Some((&release.namespace, document)),
                );
            }
            Err(problem) => self.error(
                document,
                format!("Helm release Secret {secret_name}: {problem}"),
            ),
        }
    }
}

/// The apiVersion and kind written in the first of [`LAST_APPLIED`] and
/// `options.extra_annotations` that `annotation` (a key → value lookup) finds; `None` when the
/// object carries none of them. An annotation that is not JSON with a string apiVersion and kind
/// is an error naming it.
pub fn applied_type<'a>(
    annotation: impl Fn(&str) -> Option<&'a str>,
    options: &ScanOptions,
) -> Result<Option<(String, String)>, String> {
    let keys =
        std::iter::once(LAST_APPLIED).chain(options.extra_annotations.iter().map(String::as_str));
    for key in keys {
        let Some(text) = annotation(key) else {
            continue;
        };
        let applied: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("annotation {key} is not JSON: {e}"))?;
        let field = |f: &str| applied.get(f).and_then(|v| v.as_str()).map(str::to_string);
        return match (field("apiVersion"), field("kind")) {
            (Some(v), Some(k)) => Ok(Some((v, k))),
            _ => Err(format!(
                "annotation {key} has no string apiVersion and kind"
            )),
        };
    }
    Ok(None)
}

/// The objects of a Helm 3 release Secret as the API server returns it (`data.release` in the
/// Secret's base64), named `helm:NAMESPACE/RELEASE`. `label` stands for the file in errors and in
/// [`ManifestObject::file`] (e.g. `Secret NAMESPACE/NAME`).
pub fn scan_helm_secret(secret: &serde_json::Value, label: &str) -> Scan {
    let mut scan = Scan::default();
    let file = PathBuf::from(label);
    let options = ScanOptions::default();
    let mut found = Found {
        file: &file,
        options: &options,
        scan: &mut scan,
    };
    match serde_yaml::to_value(secret) {
        Ok(value) => found.helm_release(&value, 1),
        Err(e) => found.error(1, format!("not an object: {e}")),
    }
    scan
}

#[derive(Deserialize)]
struct Release {
    name: String,
    namespace: String,
    #[serde(default)]
    manifest: String,
}

fn decode_release(secret: &Value) -> Result<Release, String> {
    let data = str_at(secret, &["data", "release"]).ok_or("no data.release")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let once = b64
        .decode(data.trim())
        .map_err(|e| format!("data.release is not base64: {e}"))?;
    let twice = b64
        .decode(once.trim_ascii())
        .map_err(|e| format!("data.release does not hold Helm's base64: {e}"))?;
    // Helm gzips releases but reads uncompressed ones too; so do we.
    let json = if twice.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(twice.as_slice())
            .take(MAX_RELEASE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("data.release is not valid gzip: {e}"))?;
        if out.len() as u64 > MAX_RELEASE_BYTES {
            return Err(format!(
                "the release is over {MAX_RELEASE_BYTES} bytes once decompressed"
            ));
        }
        out
    } else {
        twice
    };
    serde_json::from_slice(&json)
        .map_err(|e| format!("the release is not Helm's JSON (name, namespace, manifest): {e}"))
}

/// The string at `path` of nested mappings, if every step exists and the leaf is a string.
fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut v = value;
    for key in path {
        v = v.get(*key)?;
    }
    v.as_str()
}
