//! An image config's `User` resolved the way containerd resolves it (`oci.WithUser`, with
//! `WithUserID` and `WithUsername`, then `WithAdditionalGIDs`): against the image's own
//! `/etc/passwd` and `/etc/group`. Pure: the caller reads the two files from inside the root
//! filesystem and hands in their text.
//!
//! | `User`        | uid                          | primary gid                         |
//! |---------------|------------------------------|-------------------------------------|
//! | (empty)       | 0                            | 0                                   |
//! | `uid`         | as given                     | its passwd entry's, 0 without one   |
//! | `name`        | its passwd entry's (needed)  | its passwd entry's                  |
//! | `uid:gid`     | as given                     | as given                            |
//! | `name:gid`    | its passwd entry's (needed)  | as given                            |
//! | `uid:group`   | as given                     | the group's entry (needed)          |
//! | `name:group`  | its passwd entry's (needed)  | the group's entry (needed)          |
//!
//! Supplementary groups, as `WithAdditionalGIDs`: the account name of the uid (its first
//! passwd entry; `root` when `User` is empty), then every `/etc/group` entry listing that name
//! as a member, except a group of the same name; none when the uid has no passwd entry. The
//! primary gid is put first unless already there (containerd's `ensureAdditionalGids`, the fix
//! of CVE-2023-25173), so the process never keeps the runtime's own groups.

use anyhow::{anyhow, bail, Result};

/// The process identity a `User` resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `process.user.uid`.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// The supplementary gids (`process.user.additionalGids`), the primary one included.
    pub additional_gids: Vec<u32>,
}

/// The image's account files, as text: `None` when the image has no such file.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Accounts<'a> {
    /// `/etc/passwd`: `name:password:uid:gid:gecos:home:shell` lines.
    pub passwd: Option<&'a str>,
    /// `/etc/group`: `name:password:gid:member,member` lines.
    pub group: Option<&'a str>,
}

/// One `/etc/passwd` entry (the fields used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    /// The account name (first field).
    pub name: String,
    /// Third field.
    pub uid: u32,
    /// Fourth field: the primary gid.
    pub gid: u32,
}

/// One `/etc/group` entry (the fields used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    /// The group name (first field).
    pub name: String,
    /// Third field.
    pub gid: u32,
    /// Fourth field, split on commas: account names.
    pub members: Vec<String>,
}

/// The entries of a passwd file. Blank lines and lines whose uid or gid is not a number are
/// skipped (runc's parser would read such a uid as 0, root).
pub(crate) fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (!name.is_empty()).then(|| PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect()
}

/// The entries of a group file; lines without a numeric gid are skipped, empty members
/// dropped.
pub(crate) fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let gid = fields.next()?.parse().ok()?;
            let members = fields
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            (!name.is_empty()).then(|| GroupEntry {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// Resolves an image config's `User` (see the module's table) against `accounts`. Errors name
/// the user and the reason: a form that is none of the six, a name missing from the file, or
/// no file to look a name up in.
pub(crate) fn resolve(user: &str, accounts: Accounts<'_>) -> Result<Identity> {
    let passwd = accounts.passwd.map(parse_passwd);
    let groups = accounts.group.map(parse_group).unwrap_or_default();
    let (uid, gid, account) = if user.is_empty() {
        (0, 0, Some("root".to_string()))
    } else {
        let (user_part, group_part) = match user.split(':').collect::<Vec<_>>()[..] {
            [u] => (u, None),
            [u, g] => (u, Some(g)),
            _ => {
                bail!("user {user:?} is not name, uid, name:group, uid:gid, name:gid or uid:group")
            }
        };
        if user_part.is_empty() || group_part == Some("") {
            bail!("user {user:?} has an empty part");
        }
        let named = |name: &str| -> Result<&PasswdEntry> {
            let entries = passwd
                .as_ref()
                .ok_or_else(|| anyhow!("no /etc/passwd in the image to look up user {name:?}"))?;
            entries
                .iter()
                .find(|e| e.name == name)
                .ok_or_else(|| anyhow!("user {name:?} is not in the image's /etc/passwd"))
        };
        let (uid, passwd_gid) = match user_part.parse::<u32>() {
            // containerd's WithUserID: the entry's gid, 0 when the uid has none.
            Ok(uid) => (uid, by_uid(passwd.as_deref(), uid).map_or(0, |e| e.gid)),
            Err(_) => {
                let entry = named(user_part)?;
                (entry.uid, entry.gid)
            }
        };
        let gid = match group_part {
            None => passwd_gid,
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    if accounts.group.is_none() {
                        bail!("no /etc/group in the image to look up group {group:?}");
                    }
                    groups
                        .iter()
                        .find(|g| g.name == group)
                        .ok_or_else(|| anyhow!("group {group:?} is not in the image's /etc/group"))?
                        .gid
                }
            },
        };
        (
            uid,
            gid,
            by_uid(passwd.as_deref(), uid).map(|e| e.name.clone()),
        )
    };
    let mut additional_gids: Vec<u32> = match &account {
        Some(name) => groups
            .iter()
            .filter(|g| &g.name != name && g.members.iter().any(|m| m == name))
            .map(|g| g.gid)
            .collect(),
        None => Vec::new(),
    };
    if !additional_gids.contains(&gid) {
        additional_gids.insert(0, gid);
    }
    Ok(Identity {
        uid,
        gid,
        additional_gids,
    })
}

/// The first passwd entry of `uid`, as containerd's `UserFromPath` finds it.
fn by_uid(passwd: Option<&[PasswdEntry]>, uid: u32) -> Option<&PasswdEntry> {
    passwd?.iter().find(|e| e.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1::/:/bin/false\n\
        \n\
        broken:x:notanumber:0::/:/bin/sh\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        toor:x:0:0:second root:/root:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,alice\n\
        alice:x:1000:alice\n\
        staff:x:50: alice , bob\n\
        nogroup:x:65534:\n\
        bad:x:gid:alice\n";

    fn accounts() -> Accounts<'static> {
        Accounts {
            passwd: Some(PASSWD),
            group: Some(GROUP),
        }
    }

    fn id(uid: u32, gid: u32, additional: &[u32]) -> Identity {
        Identity {
            uid,
            gid,
            additional_gids: additional.to_vec(),
        }
    }

    #[test]
    fn files_parse_skipping_what_is_not_an_entry() {
        let users = parse_passwd(PASSWD);
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "alice", "nobody", "toor"]);
        let groups = parse_group(GROUP);
        assert_eq!(groups.len(), 5, "the non-numeric gid is skipped");
        assert_eq!(groups[3].members, ["alice", "bob"]);
        assert!(groups[0].members.is_empty());
    }

    #[test]
    fn each_form_resolves_as_containerd_does() {
        let a = accounts();
        // Empty: root, with root's supplementary groups (containerd asks for "root").
        assert_eq!(resolve("", a).unwrap(), id(0, 0, &[0, 10]));
        // uid: the primary gid from passwd; groups of its name, except its own-named group.
        assert_eq!(resolve("1000", a).unwrap(), id(1000, 1000, &[1000, 10, 50]));
        // uid without an entry: gid 0, no supplementary groups but the primary.
        assert_eq!(resolve("4242", a).unwrap(), id(4242, 0, &[0]));
        // name.
        assert_eq!(resolve("nobody", a).unwrap(), id(65534, 65534, &[65534]));
        assert_eq!(
            resolve("alice", a).unwrap(),
            id(1000, 1000, &[1000, 10, 50])
        );
        // uid:gid: as given; supplementary groups still of the uid's account.
        assert_eq!(resolve("1000:7", a).unwrap(), id(1000, 7, &[7, 10, 50]));
        assert_eq!(resolve("4242:7", a).unwrap(), id(4242, 7, &[7]));
        // name:gid, uid:group, name:group.
        assert_eq!(resolve("alice:7", a).unwrap(), id(1000, 7, &[7, 10, 50]));
        assert_eq!(resolve("1000:wheel", a).unwrap(), id(1000, 10, &[10, 50]));
        assert_eq!(resolve("nobody:staff", a).unwrap(), id(65534, 50, &[50]));
        // A uid shared by two names: the first entry's name (root, not toor).
        assert_eq!(resolve("toor", a).unwrap(), id(0, 0, &[0, 10]));
    }

    #[test]
    fn missing_files_are_missing_entries_for_uids_and_errors_for_names() {
        let none = Accounts::default();
        assert_eq!(resolve("", none).unwrap(), id(0, 0, &[0]));
        assert_eq!(resolve("33", none).unwrap(), id(33, 0, &[0]));
        assert_eq!(resolve("33:44", none).unwrap(), id(33, 44, &[44]));
        let err = resolve("nobody", none).unwrap_err().to_string();
        assert!(
            err.contains("no /etc/passwd") && err.contains("\"nobody\""),
            "{err}"
        );
        let err = resolve("33:staff", none).unwrap_err().to_string();
        assert!(
            err.contains("no /etc/group") && err.contains("\"staff\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_names_and_bad_forms_are_errors_naming_them() {
        let a = accounts();
        for (user, wanted) in [
            (
                "mallory",
                "user \"mallory\" is not in the image's /etc/passwd",
            ),
            (
                "alice:nope",
                "group \"nope\" is not in the image's /etc/group",
            ),
            ("a:b:c", "is not name, uid"),
            (":5", "empty part"),
            ("5:", "empty part"),
        ] {
            let err = resolve(user, a).unwrap_err().to_string();
            assert!(err.contains(wanted), "{user}: {err}");
        }
    }
}
