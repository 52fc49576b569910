//! The tests' mail system: Exim's `sendmail` (a wrapper running `exim -C <config> -odi`)
//! on a configuration that delivers every recipient into one mbox file, so what the
//! oracle mails (alerts, owner notices, scheduled reports) is delivered by a real Exim.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{World, paths};

/// The test's mail system: Exim's `sendmail` on a configuration that delivers every
/// recipient into one mbox file.
pub struct MailSystem {
    /// The wrapper the oracle runs as `sendmail`.
    pub sendmail: PathBuf,
    /// The mailbox file.
    pub mbox: PathBuf,
    /// Exim's log directory for this configuration.
    pub log: PathBuf,
}

impl MailSystem {
    /// Makes the configuration, directories and wrapper in `world`.
    pub fn new(world: &World) -> MailSystem {
        let exim_user = nix::unistd::User::from_name("Debian-exim")
            .unwrap()
            .expect("the Exim user");
        let chown = |p: &Path| {
            std::os::unix::fs::chown(
                p,
                Some(exim_user.uid.as_raw()),
                Some(exim_user.gid.as_raw()),
            )
            .unwrap()
        };
        let spool = world.path("mail-spool");
        let mail = world.path("mail");
        let log = world.path("mail-log");
        for dir in [&spool, &mail, &log] {
            fs::create_dir(dir).unwrap();
            chown(dir);
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mbox = mail.join("mbox");
        let config = world.path("mail.conf");
        fs::write(
            &config,
            format!(
                "primary_hostname = mx.test.example\n\
                 qualify_domain = example.org\n\
                 spool_directory = {spool}\n\
                 log_file_path = {log}/%slog\n\
                 keep_environment =\n\
                 never_users = root\n\
                 \n\
                 begin routers\n\
                 mailbox:\n  driver = accept\n  transport = mailbox\n\
                 \n\
                 begin transports\n\
                 mailbox:\n  driver = appendfile\n  file = {mbox}\n  user = Debian-exim\n  \
                 mode = 0644\n  delivery_date_add\n  envelope_to_add\n  return_path_add\n",
                spool = spool.display(),
                log = log.display(),
                mbox = mbox.display(),
            ),
        )
        .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        let sendmail = world.path("sendmail");
        fs::write(
            &sendmail,
            format!(
                "#!/bin/sh\nexec {} -C {} -odi \"$@\"\n",
                paths::exim_bin().display(),
                config.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&sendmail, fs::Permissions::from_mode(0o755)).unwrap();
        MailSystem {
            sendmail,
            mbox,
            log,
        }
    }

    /// The raw messages delivered so far (mbox `From ` lines removed), oldest first.
    pub fn raw_messages(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.mbox).unwrap_or_default();
        let mut messages = Vec::new();
        let mut current: Option<String> = None;
        for line in text.split_inclusive('\n') {
            if line.starts_with("From ") {
                messages.extend(current.take());
                current = Some(String::new());
            } else if let Some(m) = current.as_mut() {
                m.push_str(line);
            }
        }
        messages.extend(current);
        messages
    }
}
