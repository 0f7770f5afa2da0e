//! A test device's configuration profiles, answered as the simulator's devices answer them
//! (`sim::responder`: InstallProfile installs or replaces by `PayloadIdentifier`, RemoveProfile removes,
//! ProfileList lists), with what the profile tests need on top: identifiers it refuses, and the lost
//! acknowledgement of its next InstallProfile (installed, but the answer never reaches the server).

use crate::device::{Device, ReceivedCommand};
use crate::harness::TestServer;
use crate::sim::profile::InstalledProfile;
use crate::sim::responder::{answer_profile_command, Answer};
use plist::{Dictionary, Value};
use std::collections::BTreeSet;

#[derive(Debug, Default, Clone)]
pub struct ProfileStore {
    pub installed: Vec<InstalledProfile>,
    /// Identifiers whose installation this device refuses (MCProfileErrorDomain 4001).
    pub refuses: BTreeSet<String>,
    /// The next InstallProfile is installed but its answer lost.
    pub drop_next_install_ack: bool,
    /// Every command received, by RequestType, in order.
    pub received: Vec<String>,
}

impl ProfileStore {
    /// A profile installed before the server had any say.
    pub fn preinstall(&mut self, identifier: &str, uuid: &str) {
        self.installed.push(InstalledProfile {
            identifier: identifier.into(),
            uuid: uuid.into(),
            display_name: identifier.into(),
            payload_types: Vec::new(),
            managed: true,
        });
    }

    /// Answer one command; None when the answer is lost.
    pub fn answer(&mut self, cmd: &ReceivedCommand) -> Option<Answer> {
        self.received.push(cmd.request_type.clone());
        if cmd.request_type == "InstallProfile" {
            if let Some(id) = self.identifier_in(cmd) {
                if self.refuses.contains(&id) {
                    return Some(refusal());
                }
            }
        }
        let answer = answer_profile_command(&mut self.installed, cmd).unwrap_or(Answer {
            status: "Acknowledged",
            extra: Dictionary::new(),
        });
        let installed = cmd.request_type == "InstallProfile" && answer.status == "Acknowledged";
        if installed && std::mem::take(&mut self.drop_next_install_ack) {
            return None;
        }
        Some(answer)
    }

    fn identifier_in(&self, cmd: &ReceivedCommand) -> Option<String> {
        let payload = cmd.command.get("Payload").and_then(Value::as_data)?;
        let profile = Value::from_reader(std::io::Cursor::new(payload)).ok()?;
        let id = profile.as_dictionary()?.get("PayloadIdentifier")?;
        id.as_string().map(str::to_string)
    }

    /// Check in and answer every command the server has for the device until it has none (or an answer
    /// is lost: the device's connection ends there). Returns the request types received.
    pub async fn run(&mut self, s: &TestServer, dev: &Device) -> Vec<String> {
        let before = self.received.len();
        let mut r = s.connect(dev, dev.idle(None)).await;
        loop {
            assert_eq!(r.status, 200, "{}", r.text());
            if r.body.is_empty() {
                break;
            }
            let cmd = ReceivedCommand::parse(&r.body).expect("command");
            let Some(answer) = self.answer(&cmd) else {
                break;
            };
            let report = dev.report(None, answer.status, &cmd.uuid, answer.extra);
            r = s.connect(dev, report).await;
        }
        self.received[before..].to_vec()
    }
}

fn refusal() -> Answer {
    let mut e = Dictionary::new();
    e.insert("ErrorCode".into(), 4001.into());
    e.insert("ErrorDomain".into(), "MCProfileErrorDomain".into());
    e.insert(
        "USEnglishDescription".into(),
        "The profile could not be installed.".into(),
    );
    let mut extra = Dictionary::new();
    extra.insert(
        "ErrorChain".into(),
        Value::Array(vec![Value::Dictionary(e)]),
    );
    Answer {
        status: "Error",
        extra,
    }
}
