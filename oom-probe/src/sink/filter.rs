//! Which events a person wants printed (`--namespace`, `--pod`,
//! `--container`), decided on the enriched event.

use crate::event::Event;

/// `--namespace`, `--pod`, `--container`: which kills a person wants to see,
/// decided after enrichment. Metrics, Events and the ledger still see all.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only this namespace's pods.
    pub namespace: Option<String>,
    /// Only this pod.
    pub pod: Option<String>,
    /// Only this container.
    pub container: Option<String>,
}

impl Filter {
    /// True when the event should be printed.
    pub fn matches(&self, event: &Event) -> bool {
        if self.namespace.is_none() && self.pod.is_none() && self.container.is_none() {
            return true;
        }
        let k8s = match event {
            Event::OomKill(kill) | Event::UserspaceKill(kill) => kill.kubernetes.as_ref(),
            Event::Eviction(eviction) => Some(&eviction.kubernetes),
            Event::MemoryPressure(p) => p.target.kubernetes.as_ref(),
            Event::MemoryPressureEnd(p) => p.target.kubernetes.as_ref(),
            Event::OomKillUnobserved(_) => None,
        };
        let Some(k8s) = k8s else { return false };
        let wanted = |filter: &Option<String>, value: &Option<String>| {
            filter.as_ref().is_none_or(|f| value.as_ref() == Some(f))
        };
        wanted(&self.namespace, &k8s.namespace)
            && wanted(&self.pod, &k8s.pod)
            && wanted(&self.container, &k8s.container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EvictionEvent, Kubernetes, UnobservedKills, UnobservedReason};

    fn with_names(namespace: &str, pod: &str, container: Option<&str>) -> Kubernetes {
        Kubernetes {
            namespace: Some(namespace.into()),
            pod: Some(pod.into()),
            container: container.map(Into::into),
            ..Default::default()
        }
    }

    fn unobserved() -> Event {
        Event::OomKillUnobserved(UnobservedKills {
            time: "t".into(),
            node: "n".into(),
            cgroup_id: 1,
            cgroup_path: None,
            count: 1,
            event_id: "x".into(),
            replayed: false,
            reason: UnobservedReason::CounterAhead,
        })
    }

    #[test]
    fn an_empty_filter_prints_everything_and_a_set_one_needs_names() {
        assert!(Filter::default().matches(&unobserved()));
        let filter = Filter {
            namespace: Some("default".into()),
            ..Default::default()
        };
        assert!(!filter.matches(&unobserved()), "no kubernetes, no match");
    }

    #[test]
    fn every_field_set_must_match() {
        let filter = Filter {
            namespace: Some("default".into()),
            pod: None,
            container: Some("app".into()),
        };
        let names = with_names("default", "web-1", Some("app"));
        let matches = |kubernetes: Kubernetes| {
            filter.matches(&Event::Eviction(Box::new(EvictionEvent {
                time: "t".into(),
                node: "n".into(),
                kubernetes,
                message: None,
                containers: Vec::new(),
            })))
        };
        assert!(matches(names));
        assert!(!matches(with_names("kube-system", "web-1", Some("app"))));
        assert!(!matches(with_names("default", "web-1", Some("sidecar"))));
        assert!(!matches(with_names("default", "web-1", None)));
    }
}
