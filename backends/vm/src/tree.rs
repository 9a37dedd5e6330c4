//! The accessibility tree of a desktop, read over its AT-SPI bus and written as the XML that
//! OSWorld's and AgentFlow's GUI agents parse.
//!
//! Reading is in bulk where AT-SPI allows it: one `Cache.GetItems` per application gives every
//! object's role, name, states, interfaces, parent and index; what the cache does not hold (the
//! attributes, the screen extents of showing objects, the text and the value) is asked for with
//! all the calls in flight at once over the one connection, not one round trip after another.
//! Where an application has no cache, or an object holds more children than the cache lists
//! (tables that manage their descendants), its children are asked for one by one.
//!
//! The format (OSWorld's `desktop_env/server/main.py`, Ubuntu flavour): the root is
//! `desktop-frame`, then one element per application and object, named by its role with spaces
//! as `-`; attribute `name`; `st:<state>="true"` for each state (pyatspi's names: `multi_line`);
//! `attr:<name>` for each object attribute; `cp:screencoord="(x, y)"` and `cp:size="(w, h)"` for
//! objects that are visible and showing; `image`/`selection` `="true"` for those interfaces;
//! `val:value`, `val:min`, `val:max`, `val:step` for values; the object's text as the element's
//! text. At most 50 levels and 1,024 children per object, as OSWorld.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use atspi::{CacheItem, Interface, InterfaceSet, ObjectRefOwned, Role, State, StateSet};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use zbus::zvariant::OwnedValue;

use crate::error::{Error, Result};

/// Levels below the root, as OSWorld.
pub const MAX_DEPTH: usize = 50;
/// Children kept per object, as OSWorld.
pub const MAX_CHILDREN: usize = 1024;
/// Calls in flight at once to one application.
const IN_FLIGHT: usize = 64;
/// How long one call may take before the application is taken as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespaces of the format.
pub const NAMESPACES: &[(&str, &str)] = &[
    ("st", "https://accessibility.ubuntu.example.org/ns/state"),
    ("attr", "https://accessibility.ubuntu.example.org/ns/attributes"),
    ("cp", "https://accessibility.ubuntu.example.org/ns/component"),
    ("doc", "https://accessibility.ubuntu.example.org/ns/document"),
    ("docattr", "https://accessibility.ubuntu.example.org/ns/document/attributes"),
    ("txt", "https://accessibility.ubuntu.example.org/ns/text"),
    ("val", "https://accessibility.ubuntu.example.org/ns/value"),
    ("act", "https://accessibility.ubuntu.example.org/ns/action"),
];

/// What part of the tree to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeOptions {
    /// Objects written at most (the applications count); the rest is cut, breadth last.
    pub max_nodes: usize,
    /// Leave out objects that are not showing, with what is below them.
    pub showing_only: bool,
    /// Only the application of this name.
    pub app: Option<String>,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions { max_nodes: 10_000, showing_only: false, app: None }
    }
}

/// A tree, written.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The XML.
    pub xml: String,
    /// Elements in it, the root not counted.
    pub nodes: usize,
    /// Applications in it.
    pub apps: usize,
    /// Whether `max_nodes`, the depth or the width cut something.
    pub truncated: bool,
}

/// A connection to a desktop's accessibility bus.
#[derive(Debug, Clone)]
pub struct Accessibility {
    conn: zbus::Connection,
    /// Direct connections to applications (AT-SPI's peer-to-peer sockets), by bus name: calls
    /// to an application then skip the bus daemon.
    peers: std::sync::Arc<parking_lot::Mutex<HashMap<String, zbus::Connection>>>,
}

/// One object, as far as it is known.
#[derive(Debug, Clone)]
struct Node {
    object: ObjectRefOwned,
    role: Role,
    /// The role's name as the application says it (`GetRoleName`: a toolkit's names, such as
    /// ATK's "push button", which OSWorld's trees carry), else AT-SPI's.
    role_name: Option<std::sync::Arc<str>>,
    name: String,
    states: StateSet,
    ifaces: InterfaceSet,
    children: Vec<usize>,
    /// Children the object says it has; `None` when it does not say (-1: it manages its
    /// descendants, which the cache leaves out).
    child_count: Option<usize>,
    /// What is asked for after the structure.
    extras: Extras,
}

#[derive(Debug, Clone, Default)]
struct Extras {
    attributes: Vec<(String, String)>,
    extents: Option<(i32, i32, i32, i32)>,
    text: Option<String>,
    value: Option<[Option<f64>; 4]>,
}

impl Accessibility {
    /// Connects to the accessibility bus at `address` (`unix:path=…`).
    pub async fn connect(address: &str) -> Result<Accessibility> {
        let failed = |e: zbus::Error| Error::Accessibility(format!("cannot connect to the accessibility bus: {e}"));
        let conn = zbus::connection::Builder::address(address).map_err(failed)?.build().await.map_err(failed)?;
        // Applications fill and serve their caches only once a client listens to changes.
        let registry = ObjectRefOwned::from_static_str_unchecked("org.a11y.atspi.Registry", "/org/a11y/atspi/registry");
        let events: &[&str] = &[];
        Self::call::<_, ()>(
            &conn,
            &registry,
            "org.a11y.atspi.Registry",
            "RegisterEvent",
            &("object:children-changed", events, ""),
        )
        .await?;
        Ok(Accessibility { conn, peers: Default::default() })
    }

    /// Calls `method` of `iface` on `object`, deserialising the reply.
    async fn call<B, R>(
        conn: &zbus::Connection,
        object: &ObjectRefOwned,
        iface: &str,
        method: &str,
        body: &B,
    ) -> Result<R>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        let dest = object.name_as_str().ok_or_else(|| Error::Accessibility("an object with no bus name".into()))?;
        let call = conn.call_method(Some(dest), object.path_as_str(), Some(iface), method, body);
        let reply = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| Error::Accessibility(format!("{dest} did not answer {iface}.{method} in {CALL_TIMEOUT:?}")))?
            .map_err(|e| Error::Accessibility(format!("{iface}.{method} on {dest}: {e}")))?;
        reply.body().deserialize::<R>().map_err(|e| Error::Accessibility(format!("{iface}.{method} reply: {e}")))
    }

    /// Reads the tree.
    pub async fn tree(&self, options: &TreeOptions) -> Result<Tree> {
        let root =
            ObjectRefOwned::from_static_str_unchecked("org.a11y.atspi.Registry", "/org/a11y/atspi/accessible/root");
        let apps: Vec<ObjectRefOwned> = Self::call(&self.conn, &root, ACCESSIBLE, "GetChildren", &()).await?;
        self.forget_apps_but(&apps);
        let mut reads = JoinSet::new();
        for (at, app) in apps.into_iter().enumerate() {
            let (a11y, wanted) = (self.clone(), options.app.clone());
            reads.spawn(async move { (at, a11y.read_app(app, wanted.as_deref()).await) });
        }
        let mut read = Vec::new();
        while let Some(done) = reads.join_next().await {
            // An application that died or hangs is left out, not the whole tree.
            if let Ok((at, Ok(app_nodes))) = done {
                read.push((at, app_nodes));
            }
        }
        // In the registry's order.
        read.sort_unstable_by_key(|(at, _)| *at);
        let mut nodes: Vec<Node> = Vec::new();
        let mut app_roots = Vec::new();
        for (_, app_nodes) in read {
            if app_nodes.is_empty() {
                continue;
            }
            let base = nodes.len();
            app_roots.push(base);
            nodes.extend(app_nodes.into_iter().map(|mut n| {
                n.children.iter_mut().for_each(|c| *c += base);
                n
            }));
        }
        // What is written: depth-first from each application, within the bounds.
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut stack: Vec<(usize, usize)> = app_roots.iter().rev().map(|&r| (r, 1)).collect();
        while let Some((i, depth)) = stack.pop() {
            if kept.len() >= options.max_nodes {
                truncated = true;
                break;
            }
            kept.push(i);
            let node = &nodes[i];
            if depth >= MAX_DEPTH {
                truncated |= !node.children.is_empty();
                continue;
            }
            truncated |= node.children.len() > MAX_CHILDREN;
            for &c in node.children.iter().take(MAX_CHILDREN).rev() {
                if options.showing_only && !nodes[c].states.contains(State::Showing) {
                    continue;
                }
                stack.push((c, depth + 1));
            }
        }
        let keep: std::collections::HashSet<usize> = kept.iter().copied().collect();
        let mut xml = String::with_capacity(kept.len() * 160);
        xml.push_str("<desktop-frame");
        for (prefix, uri) in NAMESPACES {
            let _ = write!(xml, " xmlns:{prefix}=\"{uri}\"");
        }
        if app_roots.is_empty() {
            xml.push_str("/>");
        } else {
            xml.push('>');
            for &r in &app_roots {
                if keep.contains(&r) {
                    write_node(&mut xml, &nodes, r, &keep);
                }
            }
            xml.push_str("</desktop-frame>");
        }
        Ok(Tree { xml, nodes: kept.len(), apps: app_roots.len(), truncated })
    }
}

/// Objects read per application at most, whatever `max_nodes` says (a spreadsheet's cells).
const READ_BUDGET: usize = 20_000;

/// A call made while reading an application, and its answer.
enum Done {
    Children(usize, Result<Vec<ObjectRefOwned>>),
    Described(usize, Result<Node>),
    Extras(usize, Extras),
    RoleName(Role, Result<String>),
}

/// The calls still to make while reading an application: the structure's first (children,
/// objects the cache lacks, role names), each object's extras after.
#[derive(Default)]
struct Queue {
    first: std::collections::VecDeque<Job>,
    later: std::collections::VecDeque<Job>,
    /// The roles whose names are asked for already.
    asked: std::collections::HashSet<Role>,
}

impl Queue {
    /// What node `i`, once known, needs asked: its children (above `depth` limits), its role's
    /// name (once per role), its extras.
    fn follow(&mut self, i: usize, node: &Node, depth: usize) {
        if depth < MAX_DEPTH && node.child_count != Some(0) {
            self.first.push_back(Job::Children(i));
        }
        if self.asked.insert(node.role) {
            self.first.push_back(Job::RoleName(node.role, node.object.clone()));
        }
        self.later.push_back(Job::Extras(i));
    }

    fn next(&mut self) -> Option<Job> {
        self.first.pop_front().or_else(|| self.later.pop_front())
    }
}

/// A call to make.
enum Job {
    Children(usize),
    Describe(usize, ObjectRefOwned),
    RoleName(Role, ObjectRefOwned),
    Extras(usize),
}

impl Accessibility {
    /// The connection to use for `app`: a direct one when the application offers it (asked
    /// once per application), else the bus.
    async fn app_connection(&self, app: &ObjectRefOwned) -> zbus::Connection {
        let Some(bus) = app.name_as_str() else { return self.conn.clone() };
        if let Some(peer) = self.peers.lock().get(bus) {
            return peer.clone();
        }
        let address: Result<String> =
            Self::call(&self.conn, app, "org.a11y.atspi.Application", "GetApplicationBusAddress", &()).await;
        let peer = match address {
            Ok(address) if !address.is_empty() => match zbus::connection::Builder::address(address.as_str()) {
                Ok(builder) => {
                    tokio::time::timeout(CALL_TIMEOUT, builder.p2p().build()).await.ok().and_then(|c| c.ok())
                }
                Err(_) => None,
            },
            _ => None,
        };
        let conn = peer.unwrap_or_else(|| self.conn.clone());
        self.peers.lock().insert(bus.to_owned(), conn.clone());
        conn
    }

    /// Drops the direct connections to applications no longer on the desktop.
    fn forget_apps_but(&self, apps: &[ObjectRefOwned]) {
        self.peers.lock().retain(|bus, _| apps.iter().any(|a| a.name_as_str() == Some(bus)));
    }

    /// Reads one application's objects, the application first (none if it is not `wanted`).
    ///
    /// The structure is the application's children lists (`GetChildren`, the order an agent
    /// walking the tree sees, as pyatspi does), asked for every object that has children as
    /// soon as the object is known; what each object is (role, name, states, interfaces, child
    /// count) comes from the application's cache, read once (`GetItems`), and only an object the
    /// cache lacks (the cells of a table that manages its descendants) is asked for. The
    /// cache's own parent links are not used: GTK files a popover under the widget it pops from,
    /// while the children lists put it under its window. Each object's attributes, extents,
    /// text and value are asked for as it is found, behind the structure's calls, with at most
    /// [`IN_FLIGHT`] calls out at once.
    async fn read_app(&self, app: ObjectRefOwned, wanted: Option<&str>) -> Result<Vec<Node>> {
        let conn = self.app_connection(&app).await;
        let bus = app.name_as_str().unwrap_or_default().to_owned();
        let cache_ref = cache_of(&bus);
        let items: Vec<CacheItem> =
            Self::call(&conn, &cache_ref, "org.a11y.atspi.Cache", "GetItems", &()).await.unwrap_or_default();
        let cached: HashMap<&str, &CacheItem> = items.iter().map(|it| (it.object.path_as_str(), it)).collect();
        let root = match cached.get(app.path_as_str()) {
            Some(item) => node_of(item),
            None => describe(&conn, app.clone()).await?,
        };
        if wanted.is_some_and(|w| w != root.name) {
            return Ok(Vec::new());
        }
        let mut nodes = vec![root];
        let mut depth = vec![1usize];
        let mut names: HashMap<Role, std::sync::Arc<str>> = HashMap::new();
        let mut queue = Queue::default();
        queue.follow(0, &nodes[0], depth[0]);
        let mut tasks = JoinSet::new();
        loop {
            while tasks.len() < IN_FLIGHT {
                let Some(job) = queue.next() else { break };
                let conn = conn.clone();
                match job {
                    Job::Children(i) => {
                        let object = nodes[i].object.clone();
                        tasks.spawn(async move {
                            Done::Children(i, Self::call(&conn, &object, ACCESSIBLE, "GetChildren", &()).await)
                        });
                    }
                    Job::Describe(i, object) => {
                        tasks.spawn(async move { Done::Described(i, describe(&conn, object).await) });
                    }
                    Job::RoleName(role, object) => {
                        tasks.spawn(async move {
                            Done::RoleName(role, Self::call(&conn, &object, ACCESSIBLE, "GetRoleName", &()).await)
                        });
                    }
                    Job::Extras(i) => {
                        let node = &nodes[i];
                        let (object, ifaces, states) = (node.object.clone(), node.ifaces, node.states);
                        tasks.spawn(async move { Done::Extras(i, extras(&conn, &object, ifaces, states).await) });
                    }
                }
            }
            let Some(done) = tasks.join_next().await else { break };
            let Ok(done) = done else { continue };
            match done {
                Done::Children(parent, Ok(children)) => {
                    for child in children.into_iter().take(MAX_CHILDREN + 1) {
                        if nodes.len() >= READ_BUDGET {
                            break;
                        }
                        let at = nodes.len();
                        nodes[parent].children.push(at);
                        depth.push(depth[parent] + 1);
                        match cached.get(child.path_as_str()) {
                            Some(item) => {
                                nodes.push(node_of(item));
                                queue.follow(at, &nodes[at], depth[at]);
                            }
                            None => {
                                // A place held for it, filled in when it is described.
                                nodes.push(placeholder(child.clone()));
                                queue.first.push_back(Job::Describe(at, child));
                            }
                        }
                    }
                }
                Done::Described(at, Ok(node)) => {
                    nodes[at] = node;
                    queue.follow(at, &nodes[at], depth[at]);
                }
                Done::Extras(i, extras) => nodes[i].extras = extras,
                Done::RoleName(role, Ok(name)) => {
                    names.insert(role, name.into());
                }
                Done::Children(_, Err(_)) | Done::Described(_, Err(_)) | Done::RoleName(_, Err(_)) => {}
            }
        }
        for node in &mut nodes {
            node.role_name = names.get(&node.role).cloned();
        }
        Ok(nodes)
    }
}

/// The interface every object has.
const ACCESSIBLE: &str = "org.a11y.atspi.Accessible";

/// An object that could not be described: no role, no children.
fn placeholder(object: ObjectRefOwned) -> Node {
    Node {
        object,
        role: Role::Invalid,
        role_name: None,
        name: String::new(),
        states: StateSet::empty(),
        ifaces: InterfaceSet::default(),
        children: Vec::new(),
        child_count: Some(0),
        extras: Extras::default(),
    }
}

/// The cache object of the application on the bus `name` (a unique name, `:1.5`).
fn cache_of(name: &str) -> ObjectRefOwned {
    let name = zbus::names::UniqueName::try_from(name.to_owned())
        .unwrap_or_else(|_| zbus::names::UniqueName::from_static_str_unchecked(":0.0"));
    atspi::ObjectRef::new_owned(name, zbus::zvariant::ObjectPath::from_static_str_unchecked("/org/a11y/atspi/cache"))
}

fn node_of(item: &CacheItem) -> Node {
    Node {
        object: item.object.clone(),
        role: item.role,
        role_name: None,
        // The item's first string is the object's name; what atspi calls `name` is the
        // description (the wire signature is `((so)(so)(so)iiassusau)`: name, role, description).
        name: item.short_name.clone(),
        states: item.states,
        ifaces: item.ifaces,
        children: Vec::new(),
        child_count: usize::try_from(item.children).ok(),
        extras: Extras::default(),
    }
}

/// An object not in any cache, asked for its role, name, states, interfaces and child count.
async fn describe(conn: &zbus::Connection, object: ObjectRefOwned) -> Result<Node> {
    let (role, states, ifaces, name, count) = tokio::join!(
        Accessibility::call::<_, Role>(conn, &object, ACCESSIBLE, "GetRole", &()),
        Accessibility::call::<_, StateSet>(conn, &object, ACCESSIBLE, "GetState", &()),
        Accessibility::call::<_, InterfaceSet>(conn, &object, ACCESSIBLE, "GetInterfaces", &()),
        property::<String>(conn, &object, ACCESSIBLE, "Name"),
        property::<i32>(conn, &object, ACCESSIBLE, "ChildCount"),
    );
    Ok(Node {
        object,
        role: role?,
        role_name: None,
        name: name.unwrap_or_default(),
        states: states.unwrap_or_else(|_| StateSet::empty()),
        ifaces: ifaces.unwrap_or_default(),
        children: Vec::new(),
        child_count: count.ok().and_then(|n| usize::try_from(n).ok()),
        extras: Extras::default(),
    })
}

/// One D-Bus property.
async fn property<T: TryFrom<OwnedValue>>(
    conn: &zbus::Connection,
    object: &ObjectRefOwned,
    iface: &str,
    name: &str,
) -> Result<T> {
    let value: OwnedValue =
        Accessibility::call(conn, object, "org.freedesktop.DBus.Properties", "Get", &(iface, name)).await?;
    T::try_from(value).map_err(|_| Error::Accessibility(format!("{iface}.{name} has an unexpected type")))
}

/// An object's attributes, extents (when visible and showing), text and value.
async fn extras(conn: &zbus::Connection, object: &ObjectRefOwned, ifaces: InterfaceSet, states: StateSet) -> Extras {
    let shown = states.contains(State::Visible) && states.contains(State::Showing);
    let attributes = async {
        Accessibility::call::<_, HashMap<String, String>>(conn, object, ACCESSIBLE, "GetAttributes", &())
            .await
            .map(|map| {
                let mut pairs: Vec<_> = map.into_iter().collect();
                pairs.sort();
                pairs
            })
            .unwrap_or_default()
    };
    let extents = async {
        if !(shown && ifaces.contains(Interface::Component)) {
            return None;
        }
        Accessibility::call::<_, (i32, i32, i32, i32)>(conn, object, "org.a11y.atspi.Component", "GetExtents", &(0u32,))
            .await
            .ok()
    };
    let text = async {
        if !ifaces.contains(Interface::Text) {
            return None;
        }
        Accessibility::call::<_, String>(conn, object, "org.a11y.atspi.Text", "GetText", &(0i32, -1i32)).await.ok()
    };
    let value = async {
        if !ifaces.contains(Interface::Value) {
            return None;
        }
        let all: HashMap<String, OwnedValue> =
            Accessibility::call(conn, object, "org.freedesktop.DBus.Properties", "GetAll", &("org.a11y.atspi.Value",))
                .await
                .ok()?;
        let get = |k: &str| all.get(k).and_then(|v| f64::try_from(v).ok());
        Some([get("CurrentValue"), get("MinimumValue"), get("MaximumValue"), get("MinimumIncrement")])
    };
    let (attributes, extents, text, value) = tokio::join!(attributes, extents, text, value);
    Extras { attributes, extents, text, value }
}

/// Writes node `i` and the kept nodes below it.
fn write_node(xml: &mut String, nodes: &[Node], i: usize, keep: &std::collections::HashSet<usize>) {
    let node = &nodes[i];
    let role = node.role_name.as_deref().unwrap_or_else(|| node.role.name()).trim();
    let tag = if role.is_empty() { "unknown".to_owned() } else { role.replace(' ', "-") };
    let _ = write!(xml, "<{tag} name=\"");
    escape(xml, &node.name, true);
    xml.push('"');
    for state in node.states.iter() {
        let name = state.to_static_str().replace('-', "_");
        let _ = write!(xml, " st:{name}=\"true\"");
    }
    for (key, value) in &node.extras.attributes {
        if is_xml_name(key) {
            let _ = write!(xml, " attr:{key}=\"");
            escape(xml, value, true);
            xml.push('"');
        }
    }
    if let Some((x, y, w, h)) = node.extras.extents {
        let _ = write!(xml, " cp:screencoord=\"({x}, {y})\" cp:size=\"({w}, {h})\"");
    }
    if node.ifaces.contains(Interface::Image) {
        xml.push_str(" image=\"true\"");
    }
    if node.ifaces.contains(Interface::Selection) {
        xml.push_str(" selection=\"true\"");
    }
    if let Some(values) = node.extras.value {
        for (name, v) in ["value", "min", "max", "step"].iter().zip(values) {
            if let Some(v) = v {
                let _ = write!(xml, " val:{name}=\"{}\"", python_float(v));
            }
        }
    }
    let text: String = node
        .extras
        .text
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|&c| c != '\u{fffc}' && c != '\u{fffd}')
        .collect();
    let children: Vec<usize> = node.children.iter().copied().filter(|c| keep.contains(c)).collect();
    if text.is_empty() && children.is_empty() {
        xml.push_str("/>");
        return;
    }
    xml.push('>');
    escape(xml, &text, false);
    for c in children {
        write_node(xml, nodes, c, keep);
    }
    let _ = write!(xml, "</{tag}>");
}

/// Appends `text` escaped for XML (in an attribute value: quotes and whitespace too), leaving
/// out characters XML 1.0 cannot hold.
fn escape(xml: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            '"' if attribute => xml.push_str("&quot;"),
            '\n' if attribute => xml.push_str("&#10;"),
            '\r' => xml.push_str("&#13;"),
            '\t' if attribute => xml.push_str("&#9;"),
            c if allowed_in_xml(c) => xml.push(c),
            _ => {}
        }
    }
}

fn allowed_in_xml(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Whether `name` can be the local part of an attribute name.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A float as Python's `str` writes it (`1.0`, `0.5`, `1e+20`).
fn python_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_names_are_written_as_xml_can_hold_them() {
        let mut s = String::new();
        escape(&mut s, "a<b>&\"c\"\n\u{1}d", true);
        assert_eq!(s, "a&lt;b&gt;&amp;&quot;c&quot;&#10;d");
        assert!(is_xml_name("toolkit") && is_xml_name("xml-roles") && !is_xml_name("a b") && !is_xml_name("1x"));
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.25), "0.25");
        assert_eq!(python_float(-3.0), "-3.0");
    }
}
