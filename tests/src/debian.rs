//! Debian's split configuration with the shipped `exim-config/debian/` files.
//!
//! [`split_config`] copies the system's `/etc/exim4` into the test's [`World`] (nothing
//! under `/etc` changes), switches the copy to the split configuration, adds the files
//! of `exim-config/debian/conf.d/` and a `00_local_macros` with the test's values, and
//! runs `update-exim4.conf -d <copy> -o <output>`: the same generator an administrator
//! runs. The output is then used with `exim -C`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::paths;
use crate::process;
use crate::world::World;

/// Generates a Debian split configuration with exim-access installed; `macros` go into
/// `conf.d/main/00_local_macros` as `NAME = value` lines. Returns the generated file.
pub fn split_config(world: &World, macros: &[(&str, &Path)]) -> PathBuf {
    let etc = world.path("etc-exim4");
    copy_tree(Path::new("/etc/exim4"), &etc);

    let settings = etc.join("update-exim4.conf.conf");
    let text = fs::read_to_string(&settings).expect("read update-exim4.conf.conf");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("dc_use_split_config="))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&settings, format!("{text}dc_use_split_config='true'\n"))
        .expect("write update-exim4.conf.conf");

    copy_tree(
        &paths::workspace_root().join("exim-config/debian/conf.d"),
        &etc.join("conf.d"),
    );
    let mut local = String::new();
    for (name, value) in macros {
        local.push_str(&format!("{name} = {}\n", value.display()));
    }
    fs::write(etc.join("conf.d/main/00_local_macros"), local).expect("write 00_local_macros");

    let output = world.path("exim4.conf.debian");
    let mut cmd = Command::new("/usr/sbin/update-exim4.conf");
    cmd.arg("-d").arg(&etc).arg("-o").arg(&output);
    process::run(cmd, b"", Duration::from_secs(60)).assert_success();
    output
}

/// Copies the files of `from` into `to` recursively (directories merge).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create a directory");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("read a directory entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}
