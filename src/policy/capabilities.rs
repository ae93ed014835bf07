//! The capability ceiling of a bootstrap container.

use std::collections::HashSet;

use libcontainer::oci_spec::runtime::Capability;

/// containerd's default capability set (`oci.defaultUnixCaps`).
pub(crate) const CONTAINERD_DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// What Bottlerocket adds for bootstrap containers on top of containerd's defaults.
pub(crate) const BOOTSTRAP_EXTRA: [Capability; 4] = [
    Capability::SysAdmin,
    Capability::NetAdmin,
    Capability::SysModule,
    Capability::AuditControl,
];

/// Bottlerocket's bootstrap set: what an image-sourced bootstrap container gets.
pub(crate) fn bootstrap_set() -> HashSet<Capability> {
    CONTAINERD_DEFAULT
        .into_iter()
        .chain(BOOTSTRAP_EXTRA)
        .collect()
}

/// The most any configuration may ask for: the bootstrap set plus the operator's extras.
pub fn ceiling(extra: &[Capability]) -> HashSet<Capability> {
    let mut set = bootstrap_set();
    set.extend(extra.iter().copied());
    set
}

/// `CAP_SYS_ADMIN` rather than oci-spec's `SYS_ADMIN`: the name users write.
pub fn name(cap: Capability) -> String {
    format!("CAP_{cap}")
}

/// Parses `CAP_SYS_ADMIN`, `cap_sys_admin` or `SYS_ADMIN`.
pub fn parse(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(name(Capability::SysAdmin), "CAP_SYS_ADMIN");
        assert_eq!(parse("CAP_SYS_ADMIN"), Some(Capability::SysAdmin));
        assert_eq!(parse("cap_net_admin"), Some(Capability::NetAdmin));
        assert_eq!(parse("SYS_PTRACE"), Some(Capability::SysPtrace));
        assert_eq!(parse("CAP_NOPE"), None);
    }

    #[test]
    fn ceiling_is_bootstrap_set_plus_extras() {
        assert_eq!(bootstrap_set().len(), 18);
        assert!(!bootstrap_set().contains(&Capability::SysPtrace));
        assert!(ceiling(&[Capability::SysPtrace]).contains(&Capability::SysPtrace));
    }
}
