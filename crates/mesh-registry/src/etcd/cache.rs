//! The disk cache of the last good objects, for a cold start while etcd is
//! unreachable. One JSON file, replaced atomically (temp file + rename).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::layout::{self, Object, Objects};

const FORMAT: u64 = 1;

fn to_json(object: &Object) -> Result<serde_json::Value, serde_json::Error> {
    match object {
        Object::Api(o) => serde_json::to_value(o),
        Object::Service(o) => serde_json::to_value(o),
        Object::Route(o) => serde_json::to_value(o),
        Object::Consumer(o) => serde_json::to_value(o),
        Object::Plan(o) => serde_json::to_value(o),
        Object::Endpoint { spec, .. } => serde_json::to_value(spec),
        Object::Auth(o) => serde_json::to_value(o),
        Object::Mesh(o) => serde_json::to_value(o),
        Object::Gateway(o) => serde_json::to_value(o),
    }
}

/// Writes the objects (keys relative to `prefix`) to `path`.
#[cfg(test)]
pub(crate) fn store(
    path: &Path,
    prefix: &str,
    revision: i64,
    objects: &Objects,
) -> Result<(), String> {
    write_atomic(path, &encode(prefix, revision, objects)?)
}

/// The cache file's bytes for the objects (keys relative to `prefix`).
pub(crate) fn encode(prefix: &str, revision: i64, objects: &Objects) -> Result<Vec<u8>, String> {
    let mut map = serde_json::Map::new();
    for (k, o) in objects {
        map.insert(k.clone(), to_json(o).map_err(|e| e.to_string())?);
    }
    let doc = serde_json::json!({
        "format": FORMAT,
        "prefix": prefix,
        "revision": revision,
        "objects": map,
    });
    serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())
}

/// Replaces `path` with `bytes`: a synced temp file renamed over it, so a
/// crash leaves the old file or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mesh-cache.json".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.to_string()
    })
}

/// Reads the objects back; fails if the file is missing, unreadable, for
/// another prefix, or holds an object that no longer parses.
pub(crate) fn load(path: &Path, prefix: &str) -> Result<Objects, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    if doc.get("format").and_then(|f| f.as_u64()) != Some(FORMAT) {
        return Err(format!("{} is not an apimesh etcd cache", path.display()));
    }
    if doc.get("prefix").and_then(|p| p.as_str()) != Some(prefix) {
        return Err(format!("{} caches another prefix", path.display()));
    }
    let mut out = BTreeMap::new();
    if let Some(objects) = doc.get("objects").and_then(|o| o.as_object()) {
        for (k, v) in objects {
            let bytes = serde_json::to_vec(v).map_err(|e| e.to_string())?;
            let o = layout::parse_object(k, &bytes)
                .map_err(|e| format!("{}: {k}: {e}", path.display()))?;
            out.insert(k.clone(), Arc::new(o));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let mut objects = BTreeMap::new();
        let r = br#"{"id":"a","match":{"path":"/a"}}"#;
        objects.insert(
            "routes/a".to_owned(),
            Arc::new(layout::parse_object("routes/a", r).unwrap()),
        );
        let e = br#"{"address":"127.0.0.1:1"}"#;
        objects.insert(
            "endpoints/s/i".to_owned(),
            Arc::new(layout::parse_object("endpoints/s/i", e).unwrap()),
        );
        store(&path, "/p/", 7, &objects).unwrap();
        assert_eq!(load(&path, "/p/").unwrap(), objects);
        assert!(load(&path, "/q/").is_err());
        assert!(load(&dir.path().join("none"), "/p/").is_err());
    }
}
