//! [`InstanceSlots`], the builder an application configures instance counting with, and
//! this process's holder identity as its settings (or the pod's environment) give it.

use std::fmt;

use super::rules::Identity;

/// How this replica counts against `max_instances`: the slot Leases' name prefix, and
/// the pod's namespace and identity. Give it to
/// [`LicenseMonitorBuilder::instance_slots`](crate::LicenseMonitorBuilder::instance_slots).
///
/// Defaults, all from what Kubernetes gives a pod: the namespace from the service
/// account's namespace file (or the kubeconfig's context outside a cluster), the pod's
/// name from `POD_NAME` (else `HOSTNAME`, which Kubernetes sets to it) and its UID from
/// `POD_UID` (the downward API; see `deploy/kubernetes.yaml`). The client is built from
/// the in-cluster service account (or the local kubeconfig).
///
/// ```
/// use iosetu_license::InstanceSlots;
///
/// let slots = InstanceSlots::new("acme-orders"); // Leases acme-orders-slot-0, -1, ...
/// # let _ = slots;
/// ```
#[derive(Clone)]
pub struct InstanceSlots {
    pub(super) prefix: String,
    pub(super) namespace: Option<String>,
    pod_name: Option<String>,
    pod_uid: Option<String>,
    pub(super) client: Option<kube::Client>,
    pub(super) config: Option<kube::Config>,
}

impl fmt::Debug for InstanceSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSlots")
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field("pod_name", &self.pod_name)
            .field("pod_uid", &self.pod_uid)
            .field("client", &self.client.as_ref().map(|_| "custom"))
            .field("cluster_url", &self.config.as_ref().map(|c| &c.cluster_url))
            .finish()
    }
}

impl InstanceSlots {
    /// Slots named `<prefix>-slot-<i>`. The prefix is the vendor's product code: lowercase
    /// letters, digits and `-`, starting and ending with a letter or digit, at most 40
    /// characters (a Lease name and a label value must hold it).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            namespace: None,
            pod_name: None,
            pod_uid: None,
            client: None,
            config: None,
        }
    }

    /// The namespace the Leases live in (default: the pod's own).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The pod's name (default: `POD_NAME`, else `HOSTNAME`).
    pub fn pod_name(mut self, name: impl Into<String>) -> Self {
        self.pod_name = Some(name.into());
        self
    }

    /// The pod's UID (default: `POD_UID`, from the downward API). Required: a replica
    /// without one reports `license.instance_check_failed` (operation `identity`) and
    /// counts as holding no slot, rather than share an identity with its copies.
    pub fn pod_uid(mut self, uid: impl Into<String>) -> Self {
        self.pod_uid = Some(uid.into());
        self
    }

    /// Talk to the API server through this client instead of one built from the
    /// in-cluster service account (for a custom TLS or proxy setup, and for tests).
    pub fn client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Talk to the API server `config` describes (a kubeconfig context loaded with
    /// `kube::Config::from_kubeconfig`, say) instead of the in-cluster service account.
    /// The client is built as for the in-cluster one: TLS with ring as an explicit
    /// provider, trusting the configuration's CA alone; a proxy, an exec plugin or
    /// `insecure-skip-tls-verify` is an error (build a client and use
    /// [`client`](Self::client) for those).
    pub fn kube_config(mut self, config: kube::Config) -> Self {
        self.config = Some(config);
        self
    }

    /// The prefix is usable in a Lease name and a label value.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let p = self.prefix.as_bytes();
        let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if p.is_empty()
            || p.len() > 40
            || !p.first().is_some_and(edge)
            || !p.last().is_some_and(edge)
            || !p.iter().all(|b| edge(b) || *b == b'-')
        {
            return Err(
                "the instance slot prefix must be 1 to 40 lowercase letters, digits \
                        and '-', starting and ending with a letter or digit",
            );
        }
        Ok(())
    }

    /// Who this process is among the slots' holders: the pod (its name and UID, from the
    /// settings or the downward-API environment) and a random nonce of this process, so
    /// that two processes never share a holder identity, whatever their environment.
    pub(super) fn identity(&self) -> Result<Identity, String> {
        let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let name = self
            .pod_name
            .clone()
            .or_else(|| env("POD_NAME"))
            .or_else(|| env("HOSTNAME"))
            .ok_or("no pod name: set POD_NAME and POD_UID from the downward API")?;
        let uid = self.pod_uid.clone().or_else(|| env("POD_UID")).ok_or(
            "no pod UID: set POD_UID from the downward API (fieldRef metadata.uid); \
             without it this replica counts as holding no instance slot",
        )?;
        Ok(Identity::new(format!("{name}_{uid}"), nonce()))
    }
}

/// 64 random bits, as hex: the standard library's per-process random hash keys (seeded
/// from the operating system), enough to tell two processes apart; no secret rests on it.
fn nonce() -> String {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    format!("{:016x}", state.hash_one(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_fit_a_lease_name_and_a_label() {
        for good in ["acme", "a", "acme-orders-2", &"a".repeat(40)] {
            assert!(InstanceSlots::new(good).check().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme-",
            "ac_me",
            "ac.me",
            &"a".repeat(41),
        ] {
            assert!(InstanceSlots::new(bad).check().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_identity_is_the_pod_name_and_uid_and_a_nonce_of_the_process() {
        let slots = InstanceSlots::new("acme")
            .pod_name("web-7f9c")
            .pod_uid("1234-abcd");
        let (a, b) = (slots.identity().unwrap(), slots.identity().unwrap());
        assert_eq!(a.pod, "web-7f9c_1234-abcd");
        assert!(a.full.starts_with("web-7f9c_1234-abcd_") && a.full.len() == a.pod.len() + 17);
        // Two processes with the same settings are still two holders, of one pod.
        assert_ne!(a.full, b.full);
        assert!(a.same_pod(&b.full) && b.same_pod(&a.full));
        assert!(!a.same_pod(&a.full));
        assert!(
            !a.same_pod("web-7f9c_1234-abcd"),
            "a holder of the old format is a stranger"
        );
        assert!(!a.same_pod("web-7f9c_9999_0123456789abcdef"));
    }

    #[test]
    fn without_a_pod_uid_there_is_no_identity() {
        let slots = InstanceSlots::new("acme").pod_name("web-7f9c");
        if std::env::var_os("POD_UID").is_none() {
            assert!(slots.identity().unwrap_err().contains("POD_UID"));
        }
    }
}
