//! What RBAC a set of recorded API requests needs, so tests can hold the
//! deployed ClusterRole to exactly what the code does.

use std::collections::BTreeSet;

use crate::apiserver::RecordedRequest;

/// (API group, resource, verb): one permission, as a ClusterRole rule grants it.
pub type Permission = (String, String, String);

/// The permissions each request needed.
pub fn permissions_used(requests: &[RecordedRequest]) -> BTreeSet<Permission> {
    requests.iter().filter_map(permission).collect()
}

fn permission(request: &RecordedRequest) -> Option<Permission> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (*resource, false),
        [resource, _name] => (*resource, true),
        _ => return None,
    };
    let verb = match (request.method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false)
            if request
                .query("watch")
                .is_some_and(|w| w == "true" || w == "1") =>
        {
            "watch"
        }
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((group.to_string(), resource.to_string(), verb.to_string()))
}
