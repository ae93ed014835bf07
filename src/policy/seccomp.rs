//! The default seccomp profile: what Bottlerocket's host-ctr gives a bootstrap container, which
//! is containerd's default profile for the container's capabilities plus `swapon`/`swapoff`.
//!
//! The profile is data, `seccomp-default.json`, in the moby profile format (`archMap`, and rules
//! with `includes`/`excludes` by capability, architecture and kernel), compiled into the
//! binary; [`default_profile`] turns it into the runtime-spec's `linux.seccomp` for a capability
//! ceiling. It is a default, not a ceiling: a config's own profile is used as it is, and the
//! policy key `seccomp = "unconfined"` turns the default off. Seccomp is defence in depth here;
//! the policy's promise rests on capabilities, mounts and namespaces.

use std::collections::HashSet;

use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSyscall,
};
use serde::{Deserialize, Serialize};

use super::capabilities;

/// The profile as data, in the moby format.
const PROFILE: &str = include_str!("seccomp-default.json");

/// The oldest kernel the runtime runs on (libcontainer 0.7.0 needs `mount_setattr`): a rule's
/// `minKernel` at or below it always holds, so the profile stays a pure function.
const KERNEL_FLOOR: (u32, u32) = (5, 12);

/// Policy key `seccomp`: the profile of a config that has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Bottlerocket's: containerd's default profile plus `swapon`/`swapoff`.
    #[default]
    Default,
    /// No filter.
    Unconfined,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(flatten)]
    syscall: LinuxSyscall,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// moby's rule conditions; arches are Go's names (`amd64`, `arm64`).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// This build's architecture as moby's profiles name it, and as libseccomp does.
#[cfg(target_arch = "x86_64")]
const ARCH: (&str, Arch) = ("amd64", Arch::ScmpArchX86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: (&str, Arch) = ("arm64", Arch::ScmpArchAarch64);

/// The default profile for a container whose capabilities can be at most `ceiling`: a rule
/// that `includes` capabilities applies when all of them are in the ceiling, one that
/// `excludes` them when none is (moby's reading). Architectures: this build's and its 32-bit
/// variants.
pub(crate) fn default_profile(ceiling: &HashSet<Capability>) -> LinuxSeccomp {
    let profile: Profile =
        serde_json::from_str(PROFILE).expect("seccomp-default.json is checked by a unit test");
    let (go_arch, native) = ARCH;
    let has = |name: &String| capabilities::parse(name).is_some_and(|cap| ceiling.contains(&cap));
    let syscalls: Vec<LinuxSyscall> = profile
        .syscalls
        .into_iter()
        .filter(|rule| {
            let Rule {
                includes, excludes, ..
            } = rule;
            includes.caps.iter().all(has)
                && (includes.arches.is_empty() || includes.arches.iter().any(|a| a == go_arch))
                && includes.min_kernel.as_deref().is_none_or(kernel_at_floor)
                && !excludes.caps.iter().any(has)
                && !excludes.arches.iter().any(|a| a == go_arch)
        })
        .map(|rule| rule.syscall)
        .collect();
    let architectures = profile
        .arch_map
        .into_iter()
        .filter(|map| map.architecture == native)
        .flat_map(|map| std::iter::once(map.architecture).chain(map.sub_architectures))
        .collect();
    let mut seccomp = LinuxSeccomp::default();
    seccomp
        .set_default_action(profile.default_action)
        .set_default_errno_ret(profile.default_errno_ret)
        .set_architectures(Some(architectures))
        .set_syscalls(Some(syscalls));
    seccomp
}

/// Whether a `minKernel` of `major.minor` holds on every kernel the runtime runs on.
fn kernel_at_floor(version: &str) -> bool {
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(u32::MAX));
    let wanted = (parts.next().unwrap_or(u32::MAX), parts.next().unwrap_or(0));
    wanted <= KERNEL_FLOOR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(profile: &LinuxSeccomp) -> HashSet<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn the_data_parses_and_every_condition_is_known() {
        let profile: Profile = serde_json::from_str(PROFILE).unwrap();
        for rule in &profile.syscalls {
            for cap in rule.includes.caps.iter().chain(&rule.excludes.caps) {
                assert!(capabilities::parse(cap).is_some(), "unknown {cap}");
            }
            for arch in rule.includes.arches.iter().chain(&rule.excludes.arches) {
                assert!(["amd64", "arm64"].contains(&arch.as_str()), "{arch}");
            }
            if let Some(version) = &rule.includes.min_kernel {
                assert!(
                    kernel_at_floor(version),
                    "minKernel {version} above the floor"
                );
            }
        }
    }

    #[test]
    fn bootstrap_ceiling_gets_bottlerocket_syscalls() {
        let profile = default_profile(&capabilities::bootstrap_set());
        let allowed = allowed(&profile);
        for name in [
            "mount",
            "umount2",
            "swapon",
            "swapoff",
            "init_module",
            "finit_module",
            "mknod",
            "setns",
            "unshare",
            "clone3",
            "ptrace",
            "read",
        ] {
            assert!(allowed.contains(name), "{name} is not allowed");
        }
        for name in [
            "reboot",
            "kexec_load",
            "keyctl",
            "acct",
            "iopl",
            "settimeofday",
        ] {
            assert!(!allowed.contains(name), "{name} is allowed");
        }
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(libc::EPERM as u32));
        assert_eq!(
            profile.architectures().as_ref().unwrap()[0],
            ARCH.1,
            "native architecture first"
        );
        // With CAP_SYS_ADMIN, neither the namespace-less clone nor clone3's ENOSYS apply.
        assert!(profile
            .syscalls()
            .iter()
            .flatten()
            .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow || *s.names() != ["clone3"]));
    }

    #[test]
    fn extra_capabilities_widen_the_profile() {
        let mut ceiling = capabilities::bootstrap_set();
        assert!(!allowed(&default_profile(&ceiling)).contains("reboot"));
        ceiling.insert(Capability::SysBoot);
        assert!(allowed(&default_profile(&ceiling)).contains("reboot"));
    }

    #[test]
    fn without_sys_admin_clone_is_confined() {
        let ceiling: HashSet<Capability> = capabilities::CONTAINERD_DEFAULT.into_iter().collect();
        let profile = default_profile(&ceiling);
        assert!(!allowed(&profile).contains("mount"));
        let clone3 = profile
            .syscalls()
            .iter()
            .flatten()
            .find(|s| *s.names() == ["clone3"])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));
    }
}
