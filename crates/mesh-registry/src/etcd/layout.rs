//! The key layout: one key per object under a prefix, JSON values in the
//! config file's model, and the way back from a config's field path to the
//! key that holds the object.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use mesh_core::Config;
use mesh_core::config::{
    ApiSpec, AuthSettings, ConsumerSpec, EndpointSpec, GatewaySettings, MeshSettings, PlanSpec,
    RouteSpec, ServiceSpec,
};

/// The kinds of object stored under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// `apis/<name>`: an [`ApiSpec`].
    Api,
    /// `services/<name>`: a [`ServiceSpec`].
    Service,
    /// `routes/<id>`: a [`RouteSpec`].
    Route,
    /// `consumers/<id>`: a [`ConsumerSpec`].
    Consumer,
    /// `plans/<name>`: a [`PlanSpec`].
    Plan,
    /// `endpoints/<service>/<instance>`: an [`EndpointSpec`] added to the
    /// service's endpoints (self-registration writes these on a lease).
    Endpoint,
    /// `auth`: the [`AuthSettings`] singleton.
    Auth,
    /// `mesh`: the [`MeshSettings`] singleton.
    Mesh,
    /// `gateway`: the [`GatewaySettings`] singleton.
    Gateway,
}

impl ObjectKind {
    /// Every kind, in the order a config is assembled and applied.
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::Service,
        ObjectKind::Plan,
        ObjectKind::Api,
        ObjectKind::Consumer,
        ObjectKind::Endpoint,
        ObjectKind::Route,
        ObjectKind::Auth,
        ObjectKind::Mesh,
        ObjectKind::Gateway,
    ];

    /// The key segment: `apis`, `services`, …, `auth`, `mesh`, `gateway`.
    pub fn segment(self) -> &'static str {
        match self {
            ObjectKind::Api => "apis",
            ObjectKind::Service => "services",
            ObjectKind::Route => "routes",
            ObjectKind::Consumer => "consumers",
            ObjectKind::Plan => "plans",
            ObjectKind::Endpoint => "endpoints",
            ObjectKind::Auth => "auth",
            ObjectKind::Mesh => "mesh",
            ObjectKind::Gateway => "gateway",
        }
    }

    /// Parses a key segment; the singular (`api`, `route`, …) is accepted too.
    pub fn parse(s: &str) -> Option<ObjectKind> {
        ObjectKind::ALL
            .into_iter()
            .find(|k| k.segment() == s || k.segment().strip_suffix('s') == Some(s))
    }

    /// Whether the kind is a singleton (`auth`, `mesh`, `gateway`).
    pub fn is_singleton(self) -> bool {
        matches!(
            self,
            ObjectKind::Auth | ObjectKind::Mesh | ObjectKind::Gateway
        )
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment())
    }
}

/// Splits a key relative to the prefix into its kind and name (for an
/// endpoint, `<service>/<instance>`).
pub(crate) fn parse_key(rel: &str) -> Result<(ObjectKind, &str), String> {
    let (head, name) = match rel.split_once('/') {
        Some((h, n)) => (h, n),
        None => (rel, ""),
    };
    let kind = ObjectKind::parse(head)
        .filter(|k| k.segment() == head)
        .ok_or_else(|| format!("unknown kind `{head}` (not part of the key layout)"))?;
    if kind.is_singleton() {
        if !name.is_empty() {
            return Err(format!("`{head}` is a single key and has no children"));
        }
        return Ok((kind, name));
    }
    let parts = name.split('/').count();
    let want = if kind == ObjectKind::Endpoint { 2 } else { 1 };
    if name.split('/').any(str::is_empty) || parts != want {
        return Err(if kind == ObjectKind::Endpoint {
            "expected `endpoints/<service>/<instance>`".to_owned()
        } else {
            format!("expected `{head}/<name>`")
        });
    }
    Ok((kind, name))
}

/// One stored object, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Object {
    Api(ApiSpec),
    Service(ServiceSpec),
    Route(Box<RouteSpec>),
    Consumer(ConsumerSpec),
    Plan(PlanSpec),
    Endpoint { service: String, spec: EndpointSpec },
    Auth(AuthSettings),
    Mesh(MeshSettings),
    Gateway(GatewaySettings),
}

fn json<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("invalid JSON: {e}"))
}

fn same(field: &str, value: &str, key: &str) -> Result<(), String> {
    if value == key {
        Ok(())
    } else {
        Err(format!(
            "{field}: the value says `{value}` but the key names `{key}`"
        ))
    }
}

/// Parses the value stored at `rel` (a key relative to the prefix).
pub(crate) fn parse_object(rel: &str, value: &[u8]) -> Result<Object, String> {
    let (kind, name) = parse_key(rel)?;
    Ok(match kind {
        ObjectKind::Api => {
            let o: ApiSpec = json(value)?;
            same("name", &o.name, name)?;
            Object::Api(o)
        }
        ObjectKind::Service => {
            let o: ServiceSpec = json(value)?;
            same("name", &o.name, name)?;
            Object::Service(o)
        }
        ObjectKind::Route => {
            let o: RouteSpec = json(value)?;
            same("id", &o.id, name)?;
            Object::Route(Box::new(o))
        }
        ObjectKind::Consumer => {
            let o: ConsumerSpec = json(value)?;
            same("id", &o.id, name)?;
            Object::Consumer(o)
        }
        ObjectKind::Plan => {
            let o: PlanSpec = json(value)?;
            same("name", &o.name, name)?;
            Object::Plan(o)
        }
        ObjectKind::Endpoint => {
            let (service, instance) = name.split_once('/').unwrap_or((name, ""));
            let mut spec: EndpointSpec = json(value)?;
            match &spec.id {
                Some(id) => same("id", id, instance)?,
                None => spec.id = Some(instance.to_owned()),
            }
            Object::Endpoint {
                service: service.to_owned(),
                spec,
            }
        }
        ObjectKind::Auth => Object::Auth(json(value)?),
        ObjectKind::Mesh => Object::Mesh(json(value)?),
        ObjectKind::Gateway => Object::Gateway(json(value)?),
    })
}

/// Objects by key (relative to the prefix); shared, so copying a set is cheap.
pub(crate) type Objects = BTreeMap<String, Arc<Object>>;

/// A config assembled from objects, with the keys each part came from.
#[derive(Debug, Default)]
pub(crate) struct Assembled {
    pub(crate) config: Config,
    apis: Vec<String>,
    /// Per service: its own key (none when only endpoint keys name it),
    /// how many endpoints its object lists, and the endpoint keys after them.
    services: Vec<(Option<String>, usize, Vec<String>)>,
    plans: Vec<String>,
    consumers: Vec<String>,
    routes: Vec<String>,
}

/// A service's own object (and key) and its endpoint keys.
type ServiceParts<'a> = (
    Option<&'a String>,
    Option<&'a ServiceSpec>,
    Vec<(&'a String, &'a EndpointSpec)>,
);

/// Builds the config the objects describe. Endpoint keys are appended to
/// their service's endpoints; a service known only from endpoint keys gets
/// default settings.
pub(crate) fn assemble(objects: &Objects) -> Assembled {
    let mut a = Assembled::default();
    let mut services: BTreeMap<&str, ServiceParts<'_>> = BTreeMap::new();
    for (key, object) in objects {
        match object.as_ref() {
            Object::Api(o) => {
                a.config.apis.push(o.clone());
                a.apis.push(key.clone());
            }
            Object::Service(o) => {
                let e = services.entry(o.name.as_str()).or_default();
                e.0 = Some(key);
                e.1 = Some(o);
            }
            Object::Endpoint { service, spec } => {
                services
                    .entry(service.as_str())
                    .or_default()
                    .2
                    .push((key, spec));
            }
            Object::Route(o) => {
                a.config.routes.push(o.as_ref().clone());
                a.routes.push(key.clone());
            }
            Object::Consumer(o) => {
                a.config.consumers.push(o.clone());
                a.consumers.push(key.clone());
            }
            Object::Plan(o) => {
                a.config.plans.push(o.clone());
                a.plans.push(key.clone());
            }
            Object::Auth(o) => a.config.auth = o.clone(),
            Object::Mesh(o) => a.config.mesh = o.clone(),
            Object::Gateway(o) => a.config.gateway = o.clone(),
        }
    }
    for (name, (key, spec, endpoints)) in services {
        let mut service = match spec {
            Some(s) => s.clone(),
            None => match implicit_service(name) {
                Some(s) => s,
                None => continue,
            },
        };
        let own = service.endpoints.len();
        service
            .endpoints
            .extend(endpoints.iter().map(|(_, e)| (*e).clone()));
        a.config.services.push(service);
        a.services.push((
            key.cloned(),
            own,
            endpoints.into_iter().map(|(k, _)| k.clone()).collect(),
        ));
    }
    a
}

/// A service with default settings, for endpoints registered under a name
/// no `services/<name>` key declares.
fn implicit_service(name: &str) -> Option<ServiceSpec> {
    serde_json::from_value(serde_json::json!({ "name": name })).ok()
}

impl Assembled {
    /// The key that holds the object a field path such as `routes[3].match`
    /// points into, and the rest of the path (`match`).
    pub(crate) fn blame<'p>(&self, path: &'p str) -> Option<(&str, &'p str)> {
        let end = path.find(['[', '.']).unwrap_or(path.len());
        let head = &path[..end];
        let rest = &path[end..];
        match head {
            "auth" | "mesh" | "gateway" => {
                return Some((head_key(head), rest.strip_prefix('.').unwrap_or(rest)));
            }
            _ => {}
        }
        let (index, rest) = index(rest)?;
        let list = match head {
            "apis" => &self.apis,
            "plans" => &self.plans,
            "consumers" => &self.consumers,
            "routes" => &self.routes,
            "services" => {
                let (key, own, endpoints) = self.services.get(index)?;
                if let Some(after) = rest.strip_prefix("endpoints")
                    && let Some((j, tail)) = self::index(after)
                    && j >= *own
                {
                    let k = endpoints.get(j - own)?;
                    return Some((k.as_str(), tail));
                }
                return key.as_deref().map(|k| (k, rest));
            }
            _ => return None,
        };
        list.get(index).map(|k| (k.as_str(), rest))
    }
}

fn head_key(head: &str) -> &'static str {
    match head {
        "auth" => "auth",
        "mesh" => "mesh",
        _ => "gateway",
    }
}

/// Reads `[n]` at the start of `s`; returns `n` and what follows (without a
/// leading `.`).
fn index(s: &str) -> Option<(usize, &str)> {
    let s = s.strip_prefix('[')?;
    let close = s.find(']')?;
    let n = s[..close].parse().ok()?;
    let rest = &s[close + 1..];
    Some((n, rest.strip_prefix('.').unwrap_or(rest)))
}

/// The objects of a config as `(key relative to the prefix, JSON value)`,
/// in the order they are best applied. Singletons left at their defaults
/// are not listed. Names that cannot be keys (empty, or with `/`) are errors.
pub(crate) fn split_config(config: &Config) -> Result<Vec<(String, Vec<u8>)>, String> {
    fn key(kind: ObjectKind, name: &str) -> Result<String, String> {
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "{kind}: `{name}` cannot be an etcd key name (empty or contains `/`)"
            ));
        }
        Ok(format!("{kind}/{name}"))
    }
    fn value<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(v).map_err(|e| e.to_string())
    }
    let mut out = Vec::new();
    for s in &config.services {
        out.push((key(ObjectKind::Service, &s.name)?, value(s)?));
    }
    for p in &config.plans {
        out.push((key(ObjectKind::Plan, &p.name)?, value(p)?));
    }
    for a in &config.apis {
        out.push((key(ObjectKind::Api, &a.name)?, value(a)?));
    }
    for c in &config.consumers {
        out.push((key(ObjectKind::Consumer, &c.id)?, value(c)?));
    }
    for r in &config.routes {
        out.push((key(ObjectKind::Route, &r.id)?, value(r)?));
    }
    if config.auth != AuthSettings::default() {
        out.push(("auth".to_owned(), value(&config.auth)?));
    }
    if config.mesh != MeshSettings::default() {
        out.push(("mesh".to_owned(), value(&config.mesh)?));
    }
    if config.gateway != GatewaySettings::default() {
        out.push(("gateway".to_owned(), value(&config.gateway)?));
    }
    Ok(out)
}

/// The end of the range of keys that start with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix is empty): to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(parse_key("routes/a").unwrap(), (ObjectKind::Route, "a"));
        assert_eq!(
            parse_key("endpoints/s/i").unwrap(),
            (ObjectKind::Endpoint, "s/i")
        );
        assert_eq!(parse_key("auth").unwrap(), (ObjectKind::Auth, ""));
        assert!(parse_key("routes/a/b").is_err());
        assert!(parse_key("endpoints/s").is_err());
        assert!(parse_key("nope/a").is_err());
        assert!(parse_key("route/a").is_err());
        assert!(parse_key("auth/x").is_err());
        assert_eq!(ObjectKind::parse("route"), Some(ObjectKind::Route));
        assert_eq!(prefix_end(b"/apimesh/"), b"/apimesh0".to_vec());
    }

    #[test]
    fn objects_and_blame() {
        let mut objects = BTreeMap::new();
        for (k, v) in [
            (
                "services/inv",
                r#"{"name":"inv","endpoints":[{"address":"127.0.0.1:1"}]}"#,
            ),
            ("endpoints/inv/i1", r#"{"address":"127.0.0.1:2"}"#),
            ("endpoints/other/i2", r#"{"address":"127.0.0.1:3"}"#),
            ("routes/a", r#"{"id":"a","match":{"path":"/a"}}"#),
            ("routes/b", r#"{"id":"b","match":{"path":"/b"}}"#),
        ] {
            objects.insert(
                k.to_owned(),
                Arc::new(parse_object(k, v.as_bytes()).unwrap()),
            );
        }
        let a = assemble(&objects);
        assert_eq!(a.config.services.len(), 2);
        assert_eq!(a.config.services[0].endpoints.len(), 2);
        assert_eq!(a.config.services[0].endpoints[1].id.as_deref(), Some("i1"));
        assert_eq!(
            a.blame("routes[1].match.path"),
            Some(("routes/b", "match.path"))
        );
        assert_eq!(
            a.blame("services[0].endpoints[0].address"),
            Some(("services/inv", "endpoints[0].address"))
        );
        assert_eq!(
            a.blame("services[0].endpoints[1].address"),
            Some(("endpoints/inv/i1", "address"))
        );
        assert_eq!(
            a.blame("services[1].endpoints[0]"),
            Some(("endpoints/other/i2", ""))
        );
        assert_eq!(a.blame("auth.leeway"), Some(("auth", "leeway")));
        assert_eq!(a.blame("routes[9]"), None);
        assert!(
            parse_object("routes/x", br#"{"id":"y","match":{}}"#)
                .unwrap_err()
                .contains("key names `x`")
        );
        assert!(
            parse_object("routes/x", b"{")
                .unwrap_err()
                .starts_with("invalid JSON")
        );
    }
}
