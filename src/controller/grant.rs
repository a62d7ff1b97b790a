//! What an `MfaAccountBinding` lets an enrollment do. Pure: the binding, the
//! enrollment's spec and namespace, and the account's users in; a refusal (a message a
//! person can act on) or the narrowed selection out.
//!
//! Checked in two steps: what the spec declares (namespace, mode, path prefix, groups)
//! before any AWS call, and every selected user once the account's users are known. A
//! user the binding excludes (by name or by the exclusion tag) is dropped silently unless
//! the enrollment names them; any other user outside the grant refuses the enrollment.

use std::collections::{BTreeMap, BTreeSet};

use super::selection::Selection;
use crate::aws::IamUser;
use crate::crd::binding::{EXCLUDE_TAG_KEY, EXCLUDE_TAG_VALUE, serves_namespace};
use crate::crd::{MfaAccountBindingSpec, MfaEnrollmentSpec, Mode};

/// Users named in a refusal message, at most.
const NAMED: usize = 5;

/// A binding, by name, with the grant it makes.
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    pub name: &'a str,
    pub spec: &'a MfaAccountBindingSpec,
}

impl Grant<'_> {
    /// What the enrollment declares, against the binding: `Err` says why it is refused.
    pub fn check_spec(
        &self,
        spec: &MfaEnrollmentSpec,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let name = self.name;
        if !serves_namespace(&self.spec.namespaces, namespace, namespace_labels) {
            return Err(format!("MfaAccountBinding {name} does not serve namespace {namespace}"));
        }
        if spec.mode == Mode::Enroll && !self.spec.allow_enroll {
            return Err(format!("MfaAccountBinding {name} only allows mode Report (allowEnroll is not set)"));
        }
        let channel = spec.link.as_ref().and_then(|l| l.channel).unwrap_or_default();
        if spec.links() && !self.spec.allows_channel(channel) {
            return Err(format!(
                "spec.link.channel {channel:?} is not one MfaAccountBinding {name} allows (linkChannels; Email and \
                 Manual when absent)"
            ));
        }
        let prefixes = self.prefixes();
        if let Some(prefix) = &spec.users.path_prefix
            && !prefixes.iter().any(|allowed| prefix.starts_with(allowed.as_str()))
        {
            return Err(format!(
                "spec.users.pathPrefix {prefix} is outside what MfaAccountBinding {name} allows ({})",
                self.describe()
            ));
        }
        if !prefixes.iter().any(|p| p == "/") {
            let allowed = self.groups();
            let outside: Vec<&str> = spec
                .users
                .groups
                .iter()
                .flatten()
                .filter(|g| !allowed.contains(&g.to_lowercase()))
                .map(String::as_str)
                .collect();
            if !outside.is_empty() {
                return Err(format!(
                    "spec.users.groups {} outside what MfaAccountBinding {name} allows ({})",
                    outside.join(", "),
                    self.describe()
                ));
            }
        }
        Ok(())
    }

    /// The selection narrowed to what the binding grants, or why it is refused.
    pub fn narrow(
        &self,
        spec: &MfaEnrollmentSpec,
        selection: Selection,
        users: &BTreeMap<String, IamUser>,
    ) -> Result<Selection, String> {
        let named: BTreeSet<String> = spec.users.names.iter().flatten().map(|n| n.to_lowercase()).collect();
        let (mut excluded_by_name, mut outside) = (Vec::new(), Vec::new());
        let mut kept = BTreeSet::new();
        for name in selection.users {
            let Some(user) = users.get(&name) else { continue };
            if self.excludes(user) {
                if named.contains(&name.to_lowercase()) {
                    excluded_by_name.push(name);
                }
            } else if self.allows(user) {
                kept.insert(name);
            } else {
                outside.push(name);
            }
        }
        let binding = self.name;
        if !excluded_by_name.is_empty() {
            return Err(format!(
                "spec.users.names: MfaAccountBinding {binding} excludes {} (break-glass or tagged {EXCLUDE_TAG_KEY}={EXCLUDE_TAG_VALUE})",
                listed(&excluded_by_name)
            ));
        }
        if !outside.is_empty() {
            return Err(format!(
                "spec.users selects {} outside what MfaAccountBinding {binding} allows ({})",
                listed(&outside),
                self.describe()
            ));
        }
        Ok(Selection { users: kept, ..selection })
    }

    fn excludes(&self, user: &IamUser) -> bool {
        let folded = user.name.to_lowercase();
        self.spec.users.exclude.iter().flatten().any(|e| e.to_lowercase() == folded)
            // IAM tag keys are case-insensitive (and so are policy condition keys).
            || user.tags.iter().any(|(k, v)| k.eq_ignore_ascii_case(EXCLUDE_TAG_KEY) && v == EXCLUDE_TAG_VALUE)
    }

    fn allows(&self, user: &IamUser) -> bool {
        let groups = self.groups();
        self.prefixes().iter().any(|p| user.path.starts_with(p.as_str()))
            || user.groups.iter().any(|g| groups.contains(&g.to_lowercase()))
    }

    fn prefixes(&self) -> &[String] {
        self.spec.users.path_prefixes.as_deref().unwrap_or_default()
    }

    /// Allowed groups, folded (IAM group names are case-insensitive).
    fn groups(&self) -> BTreeSet<String> {
        self.spec.users.groups.iter().flatten().map(|g| g.to_lowercase()).collect()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.prefixes().is_empty() {
            parts.push(format!("paths {}", self.prefixes().join(", ")));
        }
        if let Some(groups) = &self.spec.users.groups {
            parts.push(format!("groups {}", groups.join(", ")));
        }
        parts.join("; ")
    }
}

/// "alice, bob and 3 more" (user names are not secret; the list is bounded).
fn listed(names: &[String]) -> String {
    let shown = names.iter().take(NAMED).cloned().collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(yaml: &str) -> MfaAccountBindingSpec {
        let base = "accountId: '123456789012'\nnamespaces: {names: [team-a]}\n";
        serde_yaml::from_str(&format!("{base}{yaml}")).expect("binding parses")
    }

    fn enrollment(yaml: &str) -> MfaEnrollmentSpec {
        serde_yaml::from_str(yaml).expect("enrollment parses")
    }

    fn user(name: &str, path: &str, groups: &[&str], tags: &[(&str, &str)]) -> (String, IamUser) {
        let user = IamUser {
            name: name.into(),
            path: path.into(),
            arn: format!("arn:aws:iam::123456789012:user{path}{name}"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        (name.to_owned(), user)
    }

    fn selection(names: &[&str]) -> Selection {
        Selection { users: names.iter().map(|n| n.to_string()).collect(), ..Selection::default() }
    }

    const TEAM_A: &str =
        "users: {pathPrefixes: [/team-a/], groups: [Team-A], exclude: [breakglass]}\nallowEnroll: true\n";

    #[test]
    fn the_spec_is_refused_outside_the_namespaces_mode_paths_and_groups_granted() {
        let spec = binding(TEAM_A);
        let grant = Grant { name: "a", spec: &spec };
        let none = BTreeMap::new();
        let check = |yaml: &str, namespace: &str| grant.check_spec(&enrollment(yaml), namespace, &none);
        assert_eq!(check("mode: Enroll\nusers: {pathPrefix: /team-a/ops/}", "team-a"), Ok(()));
        assert_eq!(check("mode: Enroll\nusers: {groups: [team-a]}", "team-a"), Ok(()), "groups fold case");
        let other = check("mode: Enroll\nusers: {pathPrefix: /team-a/}", "team-b").unwrap_err();
        assert_eq!(other, "MfaAccountBinding a does not serve namespace team-b");
        let everyone = check("mode: Report\nusers: {pathPrefix: /}", "team-a").unwrap_err();
        assert!(everyone.contains("pathPrefix / is outside") && everyone.contains("paths /team-a/"), "{everyone}");
        let group = check("mode: Report\nusers: {groups: [admins, team-a]}", "team-a").unwrap_err();
        assert!(group.starts_with("spec.users.groups admins outside"), "{group}");
        let report_only = binding("users: {pathPrefixes: [/]}\n");
        let grant = Grant { name: "r", spec: &report_only };
        let enroll = grant.check_spec(&enrollment("mode: Enroll\nusers: {groups: [any]}"), "team-a", &none);
        assert_eq!(enroll.unwrap_err(), "MfaAccountBinding r only allows mode Report (allowEnroll is not set)");
        let report = grant.check_spec(&enrollment("mode: Report\nusers: {groups: [any]}"), "team-a", &none);
        assert_eq!(report, Ok(()), "paths [/] grant every group");
    }

    #[test]
    fn a_tenant_cannot_send_links_to_the_chat_webhook_unless_the_binding_lists_it() {
        let none = BTreeMap::new();
        let link = |channel: &str| {
            format!("mode: Enroll\ndelivery: Link\nlink: {{channel: {channel}}}\nusers: {{pathPrefix: /team-a/}}")
        };
        let spec = binding(TEAM_A);
        let grant = Grant { name: "a", spec: &spec };
        for allowed in ["Email", "Manual"] {
            assert_eq!(grant.check_spec(&enrollment(&link(allowed)), "team-a", &none), Ok(()), "{allowed}");
        }
        let webhook = grant.check_spec(&enrollment(&link("Webhook")), "team-a", &none).unwrap_err();
        assert!(webhook.starts_with("spec.link.channel Webhook is not one MfaAccountBinding a allows"), "{webhook}");
        // Secret delivery never asks.
        let secret = "mode: Enroll\nlink: {channel: Webhook}\nusers: {pathPrefix: /team-a/}";
        assert_eq!(grant.check_spec(&enrollment(secret), "team-a", &none), Ok(()));
        let chat = binding(&format!("{TEAM_A}linkChannels: [Webhook]\n"));
        let grant = Grant { name: "c", spec: &chat };
        assert_eq!(grant.check_spec(&enrollment(&link("Webhook")), "team-a", &none), Ok(()));
        assert!(grant.check_spec(&enrollment(&link("Email")), "team-a", &none).is_err(), "only what is listed");
    }

    #[test]
    fn selected_users_outside_the_grant_refuse_and_excluded_ones_are_dropped_unless_named() {
        let spec = binding(TEAM_A);
        let grant = Grant { name: "a", spec: &spec };
        let users: BTreeMap<_, _> = [
            user("alice", "/team-a/", &[], &[]),
            user("bob", "/elsewhere/", &["team-a"], &[]),
            user("breakglass", "/team-a/", &[], &[]),
            user("robot", "/team-a/", &[], &[("IAM.MFA-Operator.dev/Exclude", "true")]),
            user("mallory", "/", &[], &[]),
        ]
        .into_iter()
        .collect();
        let by_tags = enrollment("mode: Enroll\nusers: {tags: {team: a}}");
        let narrowed = grant.narrow(&by_tags, selection(&["alice", "bob", "breakglass", "robot"]), &users);
        assert_eq!(
            narrowed.expect("granted").users,
            selection(&["alice", "bob"]).users,
            "members of a granted group count"
        );
        let outside = grant.narrow(&by_tags, selection(&["alice", "mallory"]), &users).unwrap_err();
        assert!(outside.starts_with("spec.users selects mallory outside"), "{outside}");
        let named = enrollment("mode: Enroll\nusers: {names: [Robot]}");
        let refused = grant.narrow(&named, selection(&["robot"]), &users).unwrap_err();
        assert!(refused.contains("excludes robot"), "{refused}");
    }

    #[test]
    fn a_long_refusal_names_a_few_users_and_counts_the_rest() {
        let names: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
        assert_eq!(listed(&names), "u0, u1, u2, u3, u4 and 3 more");
    }
}
