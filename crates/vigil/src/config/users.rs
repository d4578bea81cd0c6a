//! `user = "trader"` / `group = "trading"`: who an agent runs as, resolved when the config is
//! read (a name that does not exist is a config error, not a failed spawn at 3 a.m.).

use std::ffi::{CStr, CString};

/// The identity an agent's process takes before it execs: ids, and what its environment says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the user's (from the group database) with `gid` first.
    pub groups: Vec<u32>,
    pub home: String,
}

impl Credentials {
    /// What systemd's `User=` puts in the environment: the user's HOME, USER and LOGNAME.
    pub fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("HOME", self.home.as_str()),
            ("USER", self.user.as_str()),
            ("LOGNAME", self.user.as_str()),
        ]
    }
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// Numeric ids are taken as they are (a uid without a passwd entry, as in containers).
fn passwd(user: &str) -> Result<Passwd, String> {
    let numeric = user.parse::<u32>().ok();
    let c = CString::new(user).map_err(|_| "the name holds a NUL byte".to_string())?;
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r/getpwuid_r write into `pwd` and `buf`, which outlive the strings
    // read from them below; `found` is null or points at `pwd`.
    let rc = unsafe {
        match numeric {
            Some(uid) => libc::getpwuid_r(
                uid,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            ),
            None => libc::getpwnam_r(
                c.as_ptr(),
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            ),
        }
    };
    if rc != 0 || found.is_null() {
        return match numeric {
            Some(uid) => Ok(Passwd {
                name: user.to_string(),
                uid,
                gid: uid,
                home: "/".into(),
            }),
            None => Err(format!("no user `{user}` on this machine")),
        };
    }
    // SAFETY: found == pwd.as_mut_ptr() and was filled in; its strings point into `buf`.
    let p = unsafe { &*found };
    let text = |s: *const libc::c_char| {
        if s.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string inside `buf`.
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        }
    };
    Ok(Passwd {
        name: text(p.pw_name),
        uid: p.pw_uid,
        gid: p.pw_gid,
        home: text(p.pw_dir),
    })
}

fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let c = CString::new(group).map_err(|_| "the name holds a NUL byte".to_string())?;
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as for getpwnam_r.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            grp.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(format!("no group `{group}` on this machine"));
    }
    // SAFETY: filled in by getgrnam_r.
    Ok(unsafe { (*found).gr_gid })
}

/// The user's supplementary groups, as `initgroups` would set them.
fn supplementary(name: &str, gid: u32) -> Vec<u32> {
    let Ok(c) = CString::new(name) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let before = n;
        // SAFETY: `groups` has room for `n` entries; getgrouplist says how many it needs.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            groups.retain(|g| *g != gid);
            groups.insert(0, gid);
            return groups;
        }
        if n <= before {
            n = before * 2;
        }
        if n > 65_536 {
            return vec![gid];
        }
    }
}

/// `user` and optional `group` (default: the user's primary group).
pub fn resolve(user: &str, group: Option<&str>) -> Result<Credentials, String> {
    let p = passwd(user)?;
    let gid = match group {
        Some(g) => group_id(g)?,
        None => p.gid,
    };
    Ok(Credentials {
        groups: supplementary(&p.name, gid),
        user: p.name,
        uid: p.uid,
        gid,
        home: p.home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_users_groups_and_ids() {
        let root = resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.groups[0], 0);
        assert_eq!(resolve("0", Some("0")).unwrap().uid, 0);
        assert_eq!(resolve("54321", None).unwrap().uid, 54321);
        assert!(
            resolve("no-such-user-xyz", None)
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            resolve("root", Some("no-such-group-xyz"))
                .unwrap_err()
                .contains("no group")
        );
    }
}
