//! Which IAM users an enrollment's `spec.users` selects, evaluated against an inventory.
//! Pure: the same selector and users always give the same answer.
//!
//! IAM treats user and group names as case-insensitive (`Alice` and `alice` cannot both
//! exist), so names, groups and exclusions match regardless of case. Tags match exactly.

use std::collections::{BTreeMap, BTreeSet};

use crate::aws::IamUser;
use crate::crd::UserSelector;

/// The outcome of evaluating a selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Selected users that exist, by their exact IAM name.
    pub users: BTreeSet<String>,
    /// Names from `spec.users.names` with no such user in the account.
    pub not_found: BTreeSet<String>,
    /// Groups from `spec.users.groups` that no user of the account belongs to.
    pub empty_groups: BTreeSet<String>,
}

impl Selection {
    /// Groups named in the selector that do not exist in the account (IAM group names
    /// are case-insensitive): a value a person must fix, unlike a group without members.
    pub fn unknown_groups(&self, groups: &BTreeSet<String>) -> Vec<String> {
        let known: BTreeSet<String> = groups.iter().map(|g| g.to_lowercase()).collect();
        self.empty_groups.iter().filter(|g| !known.contains(&g.to_lowercase())).cloned().collect()
    }
}

/// Evaluates `selector` over `users` (keyed by exact name). `console_users` is required
/// when `selector.console_access_only` is set; `None` there selects nobody, so a missing
/// report can never widen a selection.
pub fn select(
    selector: &UserSelector,
    users: &BTreeMap<String, IamUser>,
    console_users: Option<&BTreeSet<String>>,
) -> Selection {
    let fold = |s: &String| s.to_lowercase();
    let names: BTreeSet<String> = selector.names.iter().flatten().map(fold).collect();
    let groups: BTreeSet<String> = selector.groups.iter().flatten().map(fold).collect();
    let exclude: BTreeSet<String> = selector.exclude.iter().flatten().map(fold).collect();

    let mut selection = Selection::default();
    let mut seen_names = BTreeSet::new();
    let mut seen_groups = BTreeSet::new();
    for user in users.values() {
        let folded = user.name.to_lowercase();
        let by_name = names.contains(&folded);
        if by_name {
            seen_names.insert(folded.clone());
        }
        let user_groups: BTreeSet<String> = user.groups.iter().map(fold).collect();
        for g in user_groups.intersection(&groups) {
            seen_groups.insert(g.clone());
        }
        let by_path = selector.path_prefix.as_ref().is_some_and(|p| user.path.starts_with(p.as_str()));
        let by_group = !user_groups.is_disjoint(&groups);
        let by_tags = selector.tags.as_ref().is_some_and(|tags| tags.iter().all(|(k, v)| user.tags.get(k) == Some(v)));
        if !(by_name || by_path || by_group || by_tags) || exclude.contains(&folded) {
            continue;
        }
        if selector.console_access_only && !console_users.is_some_and(|c| c.contains(&user.name)) {
            continue;
        }
        selection.users.insert(user.name.clone());
    }
    selection.not_found =
        selector.names.iter().flatten().filter(|n| !seen_names.contains(&n.to_lowercase())).cloned().collect();
    selection.empty_groups =
        selector.groups.iter().flatten().filter(|g| !seen_groups.contains(&g.to_lowercase())).cloned().collect();
    selection
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, path: &str, groups: &[&str], tags: &[(&str, &str)]) -> IamUser {
        IamUser {
            name: name.into(),
            path: path.into(),
            arn: format!("arn:aws:iam::123456789012:user{path}{name}"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn account() -> BTreeMap<String, IamUser> {
        [
            user("alice", "/engineering/", &["Developers"], &[("team", "payments")]),
            user("Bob", "/engineering/backend/", &[], &[]),
            user("carol", "/finance/", &["developers", "admins"], &[]),
            user("dave", "/", &[], &[("team", "payments"), ("env", "prod")]),
            user("ci-bot", "/engineering/", &[], &[]),
        ]
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect()
    }

    fn names(selection: &Selection) -> Vec<&str> {
        selection.users.iter().map(String::as_str).collect()
    }

    #[test]
    fn selectors_are_a_union_minus_exclude() {
        let selector = UserSelector {
            names: Some(vec!["dave".into()]),
            path_prefix: Some("/engineering/".into()),
            exclude: Some(vec!["CI-BOT".into()]),
            ..UserSelector::default()
        };
        assert_eq!(names(&select(&selector, &account(), None)), ["Bob", "alice", "dave"]);
    }

    #[test]
    fn groups_and_names_match_regardless_of_case_and_tags_match_exactly() {
        let by_group = UserSelector { groups: Some(vec!["DEVELOPERS".into()]), ..UserSelector::default() };
        assert_eq!(names(&select(&by_group, &account(), None)), ["alice", "carol"]);

        let by_name = UserSelector { names: Some(vec!["bob".into()]), ..UserSelector::default() };
        assert_eq!(names(&select(&by_name, &account(), None)), ["Bob"], "the exact IAM name is reported");

        let by_tags = UserSelector {
            tags: Some([("team".to_owned(), "payments".to_owned()), ("env".to_owned(), "prod".to_owned())].into()),
            ..UserSelector::default()
        };
        assert_eq!(names(&select(&by_tags, &account(), None)), ["dave"], "every tag must match");
    }

    #[test]
    fn unknown_names_and_groups_are_reported_not_selected() {
        let selector = UserSelector {
            names: Some(vec!["alice".into(), "zoe".into()]),
            groups: Some(vec!["nobody-here".into()]),
            ..UserSelector::default()
        };
        let selection = select(&selector, &account(), None);
        assert_eq!(names(&selection), ["alice"]);
        assert_eq!(selection.not_found, BTreeSet::from(["zoe".to_owned()]));
        assert_eq!(selection.empty_groups, BTreeSet::from(["nobody-here".to_owned()]));
    }

    #[test]
    fn console_access_only_needs_the_report_and_never_widens() {
        let selector =
            UserSelector { path_prefix: Some("/".into()), console_access_only: true, ..UserSelector::default() };
        let console = BTreeSet::from(["carol".to_owned(), "ghost".to_owned()]);
        assert_eq!(names(&select(&selector, &account(), Some(&console))), ["carol"]);
        assert!(select(&selector, &account(), None).users.is_empty());
    }
}
