//! The test bed's strict IAM layer answers as real IAM where moto alone is lenient:
//! codes checked against the device's seed, devices that must exist and be free, no
//! deleting an assigned device, MaxItems/Marker paging, and the console's cleanup of
//! unassigned devices. Everything goes through the plain SDK client; codes come from
//! `common::iam::codes_now`, computed from the seed as a phone would.

use crate::common;

use std::collections::BTreeSet;
use std::future::Future;

use aws_sdk_iam::Client;
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::{AssignmentStatusType, EntityType, Tag};
use common::{iam, strict_iam};

/// How IAM refused a request.
#[derive(Debug)]
struct Refusal {
    status: u16,
    code: String,
    message: String,
}

fn refusal<T: std::fmt::Debug, E>(what: &str, result: Result<T, SdkError<E>>) -> Refusal
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let err = match result {
        Ok(answer) => panic!("{what}: accepted ({answer:?}), expected a refusal"),
        Err(err) => err,
    };
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (status, err.code()) {
        (Some(status), Some(code)) => {
            Refusal { status, code: code.to_owned(), message: err.message().unwrap_or_default().to_owned() }
        }
        _ => panic!("{what}: no IAM error answer: {}", DisplayErrorContext(&err)),
    }
}

async fn setup() -> Client {
    strict_iam::require().await;
    iam::client().await
}

/// A new virtual device: (serial, base32 seed).
async fn new_device(iam: &Client, name: &str) -> (String, String) {
    let created = iam
        .create_virtual_mfa_device()
        .virtual_mfa_device_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create device {name}: {}", DisplayErrorContext(e)));
    let device = created.virtual_mfa_device.expect("device in the answer");
    let seed = String::from_utf8(device.base32_string_seed.expect("seed").into_inner()).expect("base32 text");
    (device.serial_number, seed)
}

async fn enable(
    iam: &Client,
    user: &str,
    serial: &str,
    code1: &str,
    code2: &str,
) -> Result<(), SdkError<aws_sdk_iam::operation::enable_mfa_device::EnableMFADeviceError>> {
    iam.enable_mfa_device()
        .user_name(user)
        .serial_number(serial)
        .authentication_code1(code1)
        .authentication_code2(code2)
        .send()
        .await
        .map(|_| ())
}

async fn enable_now(iam: &Client, user: &str, serial: &str, seed: &str) {
    let (code1, code2) = iam::codes_now(seed);
    enable(iam, user, serial, &code1, &code2)
        .await
        .unwrap_or_else(|e| panic!("enable {serial} for {user} with the right codes: {}", DisplayErrorContext(e)));
}

/// The serials of `user`'s MFA devices.
async fn devices_of(iam: &Client, user: &str) -> Vec<String> {
    let answer = iam
        .list_mfa_devices()
        .user_name(user)
        .send()
        .await
        .unwrap_or_else(|e| panic!("list MFA devices of {user}: {}", DisplayErrorContext(e)));
    answer.mfa_devices.into_iter().map(|d| d.serial_number).collect()
}

/// The user a virtual device is assigned to: `None` if the device does not exist,
/// `Some(None)` if it is unassigned.
async fn assignment(iam: &Client, serial: &str) -> Option<Option<String>> {
    iam::virtual_devices(iam).await.into_iter().find(|(s, _)| s == serial).map(|(_, user)| user)
}

/// Whether IAM could accept (code1, code2) for `seed` around now: any consecutive pair
/// whose second code falls in a window wider than IAM's (two steps back, one ahead),
/// so that a "wrong" pair is wrong whenever the server checks it.
fn valid_near_now(seed: &str, code1: &str, code2: &str) -> bool {
    let step = iam::now_secs() / 30;
    (step - 4..=step + 3).any(|s| {
        let (c1, c2) = iam::codes_at(seed, s * 30);
        c1 == code1 && c2 == code2
    })
}

fn assert_no_codes_in(refusal: &Refusal, codes: &[&str]) {
    for code in codes.iter().filter(|c| !c.trim().is_empty()) {
        assert!(!refusal.message.contains(code.trim()), "the error message echoes an authentication code");
    }
}

#[tokio::test]
async fn right_codes_enable_the_device() {
    let iam = setup().await;
    let user = common::unique("strict-ok");
    iam::create_user(&iam, &user, "/").await;
    let (serial, seed) = new_device(&iam, &user).await;

    enable_now(&iam, &user, &serial, &seed).await;

    assert_eq!(devices_of(&iam, &user).await, std::slice::from_ref(&serial));
    assert_eq!(assignment(&iam, &serial).await, Some(Some(user)));
}

#[tokio::test]
async fn codes_not_from_the_seed_are_invalid_authentication_codes() {
    let iam = setup().await;
    let user = common::unique("strict-wrong");
    iam::create_user(&iam, &user, "/").await;
    let (serial, seed) = new_device(&iam, &user).await;
    let (now1, now2) = iam::codes_now(&seed);
    let (stale1, stale2) = iam::codes_at(&seed, iam::now_secs() - 600);
    let (other1, other2) = iam::codes_now(&new_device(&iam, &format!("{user}-other")).await.1);
    let mut candidates = vec![
        ("codes of another device", other1, other2),
        ("codes from ten minutes ago", stale1, stale2),
        ("the right codes in the wrong order", now2.clone(), now1.clone()),
        ("the right first code twice", now1.clone(), now1),
        ("the right second code twice", now2.clone(), now2),
    ];
    candidates.extend((0..10).map(|d| ("one repeated digit", d.to_string().repeat(6), d.to_string().repeat(6))));
    // A candidate that happens to be a valid pair (one in a million) proves nothing.
    candidates.retain(|(_, c1, c2)| !valid_near_now(&seed, c1, c2));
    assert!(candidates.len() >= 10, "too few wrong pairs left to test");

    for (what, code1, code2) in &candidates {
        let refused = refusal(what, enable(&iam, &user, &serial, code1, code2).await);
        assert_eq!((refused.status, refused.code.as_str()), (403, "InvalidAuthenticationCode"), "{what}: {refused:?}");
        assert_no_codes_in(&refused, &[code1, code2]);
    }

    assert!(devices_of(&iam, &user).await.is_empty(), "a refused enable left a device on {user}");
    assert_eq!(assignment(&iam, &serial).await, Some(None));
    // The same device and user take the right codes: only the codes were wrong.
    enable_now(&iam, &user, &serial, &seed).await;
    assert_eq!(devices_of(&iam, &user).await, [serial]);
}

#[tokio::test]
async fn malformed_codes_are_a_validation_error() {
    let iam = setup().await;
    let user = common::unique("strict-malformed");
    iam::create_user(&iam, &user, "/").await;
    let (serial, seed) = new_device(&iam, &user).await;
    let (code1, code2) = iam::codes_now(&seed);
    let cases = [
        ("the right first code with a newline", format!("{code1}\n"), code2.clone(), "authenticationCode1"),
        ("\"123456\\n\"", "123456\n".to_owned(), code2.clone(), "authenticationCode1"),
        ("a five-digit first code", code1[..5].to_owned(), code2.clone(), "authenticationCode1"),
        ("a five-digit second code", code1.clone(), code2[..5].to_owned(), "authenticationCode2"),
        ("letters", "abcdef".to_owned(), code2.clone(), "authenticationCode1"),
        ("seven digits", code1.clone(), format!("{code2}0"), "authenticationCode2"),
    ];

    for (what, c1, c2, field) in &cases {
        let refused = refusal(what, enable(&iam, &user, &serial, c1, c2).await);
        assert_eq!((refused.status, refused.code.as_str()), (400, "ValidationError"), "{what}: {refused:?}");
        assert!(refused.message.contains(field), "{what}: the message does not name {field}: {}", refused.message);
        assert_no_codes_in(&refused, &[c1, c2]);
    }
    assert!(devices_of(&iam, &user).await.is_empty(), "a malformed enable left a device on {user}");
    assert_eq!(assignment(&iam, &serial).await, Some(None));
}

#[tokio::test]
async fn a_deleted_or_unknown_device_or_user_is_no_such_entity() {
    let iam = setup().await;
    let user = common::unique("strict-gone");
    iam::create_user(&iam, &user, "/").await;
    let (serial, seed) = new_device(&iam, &user).await;
    iam.delete_virtual_mfa_device()
        .serial_number(&serial)
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete {serial}: {}", DisplayErrorContext(e)));
    let (code1, code2) = iam::codes_now(&seed);

    let deleted = refusal("enable a deleted device", enable(&iam, &user, &serial, &code1, &code2).await);
    assert_eq!((deleted.status, deleted.code.as_str()), (404, "NoSuchEntity"), "{deleted:?}");

    let never = format!("{serial}-never-created");
    let unknown = refusal("enable an unknown serial", enable(&iam, &user, &never, &code1, &code2).await);
    assert_eq!((unknown.status, unknown.code.as_str()), (404, "NoSuchEntity"), "{unknown:?}");

    let (live, live_seed) = new_device(&iam, &format!("{user}-live")).await;
    let (c1, c2) = iam::codes_now(&live_seed);
    let nobody = common::unique("strict-nobody");
    let no_user = refusal("enable for a user that does not exist", enable(&iam, &nobody, &live, &c1, &c2).await);
    assert_eq!((no_user.status, no_user.code.as_str()), (404, "NoSuchEntity"), "{no_user:?}");
    assert_eq!(assignment(&iam, &live).await, Some(None));
    assert!(devices_of(&iam, &user).await.is_empty());
}

#[tokio::test]
async fn a_device_assigned_to_one_user_is_refused_for_another() {
    let iam = setup().await;
    let first = common::unique("strict-first");
    let second = format!("{first}-second");
    iam::create_user(&iam, &first, "/").await;
    iam::create_user(&iam, &second, "/").await;
    let (serial, seed) = new_device(&iam, &first).await;
    enable_now(&iam, &first, &serial, &seed).await;

    let (code1, code2) = iam::codes_now(&seed);
    let refused = refusal("enable another user's device", enable(&iam, &second, &serial, &code1, &code2).await);
    assert_eq!((refused.status, refused.code.as_str()), (409, "EntityAlreadyExists"), "{refused:?}");

    assert!(devices_of(&iam, &second).await.is_empty(), "{second} got {first}'s device");
    assert_eq!(devices_of(&iam, &first).await, std::slice::from_ref(&serial));
    assert_eq!(assignment(&iam, &serial).await, Some(Some(first)));
}

#[tokio::test]
async fn deleting_an_assigned_device_is_a_delete_conflict() {
    let iam = setup().await;
    let user = common::unique("strict-del");
    iam::create_user(&iam, &user, "/").await;
    let (serial, seed) = new_device(&iam, &user).await;
    enable_now(&iam, &user, &serial, &seed).await;

    let refused =
        refusal("delete an assigned device", iam.delete_virtual_mfa_device().serial_number(&serial).send().await);
    assert_eq!((refused.status, refused.code.as_str()), (409, "DeleteConflict"), "{refused:?}");
    assert_eq!(assignment(&iam, &serial).await, Some(Some(user.clone())), "the device is gone or unassigned");
    assert_eq!(devices_of(&iam, &user).await, std::slice::from_ref(&serial));

    // Once deactivated (unassigned) it can be deleted: the assignment was the conflict.
    iam.deactivate_mfa_device()
        .user_name(&user)
        .serial_number(&serial)
        .send()
        .await
        .unwrap_or_else(|e| panic!("deactivate {serial}: {}", DisplayErrorContext(e)));
    iam.delete_virtual_mfa_device()
        .serial_number(&serial)
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete the deactivated {serial}: {}", DisplayErrorContext(e)));
    assert_eq!(assignment(&iam, &serial).await, None);
}

/// Walks a listing page by page: `page(marker)` returns (items, IsTruncated, Marker).
/// Returns the items of each page.
async fn walk<F, Fut>(mut page: F) -> Vec<Vec<String>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = (Vec<String>, bool, Option<String>)>,
{
    let mut pages = Vec::new();
    let mut marker = None;
    loop {
        let (items, truncated, next) = page(marker.take()).await;
        assert_eq!(truncated, next.is_some(), "IsTruncated={truncated} with Marker {next:?}");
        pages.push(items);
        match next {
            Some(next) => marker = Some(next),
            None => return pages,
        }
        assert!(pages.len() < 100, "the listing never ends");
    }
}

fn sizes(pages: &[Vec<String>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

/// Every item of every page, each exactly once.
fn union_of(pages: &[Vec<String>]) -> BTreeSet<String> {
    let all: Vec<&String> = pages.iter().flatten().collect();
    let set: BTreeSet<String> = all.iter().map(|s| (*s).clone()).collect();
    assert_eq!(set.len(), all.len(), "an item on two pages: {pages:?}");
    set
}

async fn create_users(iam: &Client, names: &[String], path: &str) {
    futures::future::join_all(names.iter().map(|name| iam::create_user(iam, name, path))).await;
}

#[tokio::test]
async fn list_users_pages_by_max_items() {
    let iam = setup().await;
    let tag = common::unique("strict-pages");
    let path = format!("/{tag}/");
    let users: Vec<String> = (0..5).map(|i| format!("{tag}-{i}")).collect();
    create_users(&iam, &users, &path).await;

    let iam = &iam;
    let path = &path;
    let pages = walk(move |marker| async move {
        let page = iam
            .list_users()
            .path_prefix(path)
            .max_items(2)
            .set_marker(marker)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list users: {}", DisplayErrorContext(e)));
        (page.users.into_iter().map(|u| u.user_name).collect(), page.is_truncated, page.marker)
    })
    .await;

    assert_eq!(sizes(&pages), [2, 2, 1], "{pages:?}");
    assert_eq!(union_of(&pages), users.into_iter().collect());
}

#[tokio::test]
async fn account_authorization_details_page_across_their_lists() {
    strict_iam::require().await;
    // Exact listings of a whole account: one that no other test touches.
    let iam = strict_iam::client_in_account(&strict_iam::unique_account()).await;
    let users: Vec<String> = (0..5).map(|i| format!("gaad-user-{i}")).collect();
    create_users(&iam, &users, "/").await;
    let groups: Vec<String> = (0..2).map(|i| format!("gaad-group-{i}")).collect();
    for group in &groups {
        iam.create_group()
            .group_name(group)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create group {group}: {}", DisplayErrorContext(e)));
    }

    let iam = &iam;
    let details = |filters: Vec<EntityType>| {
        walk(move |marker| {
            let filters = filters.clone();
            async move {
                let page = iam
                    .get_account_authorization_details()
                    .set_filter(Some(filters))
                    .max_items(2)
                    .set_marker(marker)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("get account authorization details: {}", DisplayErrorContext(e)));
                let users = page.user_detail_list.unwrap_or_default().into_iter().filter_map(|u| u.user_name);
                let groups = page.group_detail_list.unwrap_or_default().into_iter().filter_map(|g| g.group_name);
                (users.chain(groups).collect(), page.is_truncated, page.marker)
            }
        })
    };

    let pages = details(vec![EntityType::User]).await;
    assert_eq!(sizes(&pages), [2, 2, 1], "{pages:?}");
    assert_eq!(union_of(&pages), users.iter().cloned().collect());

    // MaxItems counts the items of all lists together: 5 users then 2 groups.
    let pages = details(vec![EntityType::User, EntityType::Group]).await;
    assert_eq!(sizes(&pages), [2, 2, 2, 1], "{pages:?}");
    assert_eq!(union_of(&pages), users.iter().chain(&groups).cloned().collect());
}

#[tokio::test]
async fn list_virtual_mfa_devices_pages_by_max_items() {
    strict_iam::require().await;
    let iam = strict_iam::client_in_account(&strict_iam::unique_account()).await;
    let user = "paged-owner";
    iam::create_user(&iam, user, "/").await;
    let mut serials = BTreeSet::new();
    for i in 0..4 {
        let (serial, seed) = new_device(&iam, &format!("paged-{i}")).await;
        if i == 0 {
            enable_now(&iam, user, &serial, &seed).await;
        }
        serials.insert(serial);
    }

    let iam = &iam;
    let devices = |status: AssignmentStatusType| {
        walk(move |marker| {
            let status = status.clone();
            async move {
                let page = iam
                    .list_virtual_mfa_devices()
                    .assignment_status(status)
                    .max_items(2)
                    .set_marker(marker)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("list virtual MFA devices: {}", DisplayErrorContext(e)));
                let serials = page.virtual_mfa_devices.into_iter().map(|d| d.serial_number).collect();
                (serials, page.is_truncated, page.marker)
            }
        })
    };

    // Four devices in pages of two: no empty third page behind a last full one.
    let pages = devices(AssignmentStatusType::Any).await;
    assert_eq!(sizes(&pages), [2, 2], "{pages:?}");
    assert_eq!(union_of(&pages), serials);
    let pages = devices(AssignmentStatusType::Unassigned).await;
    assert_eq!(sizes(&pages), [2, 1], "{pages:?}");
    assert_eq!(union_of(&pages).len(), 3);
}

#[tokio::test]
async fn groups_tags_and_a_users_mfa_devices_page_too() {
    strict_iam::require().await;
    let iam = strict_iam::client_in_account(&strict_iam::unique_account()).await;
    let user = "paged-user";
    iam::create_user(&iam, user, "/").await;
    let mut groups = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut serials = BTreeSet::new();
    for i in 0..3 {
        let group = format!("paged-group-{i}");
        iam.create_group().group_name(&group).send().await.expect("create group");
        groups.insert(group);
        let key = format!("key-{i}");
        iam::tag_user(&iam, user, &key, "v").await;
        keys.insert(key);
        let (serial, seed) = new_device(&iam, &format!("paged-device-{i}")).await;
        enable_now(&iam, user, &serial, &seed).await;
        serials.insert(serial);
    }
    let iam = &iam;

    let pages = walk(move |marker| async move {
        let page = iam.list_groups().max_items(2).set_marker(marker).send().await.expect("list groups");
        (page.groups.into_iter().map(|g| g.group_name).collect(), page.is_truncated, page.marker)
    })
    .await;
    assert_eq!(sizes(&pages), [2, 1], "{pages:?}");
    assert_eq!(union_of(&pages), groups);

    let pages = walk(move |marker| async move {
        let page = iam.list_user_tags().user_name(user).max_items(2).set_marker(marker).send().await.expect("tags");
        (page.tags.into_iter().map(|t: Tag| t.key).collect(), page.is_truncated, page.marker)
    })
    .await;
    assert_eq!(sizes(&pages), [2, 1], "{pages:?}");
    assert_eq!(union_of(&pages), keys);

    let pages = walk(move |marker| async move {
        let page = iam.list_mfa_devices().user_name(user).max_items(2).set_marker(marker).send().await.expect("mfa");
        (page.mfa_devices.into_iter().map(|d| d.serial_number).collect(), page.is_truncated, page.marker)
    })
    .await;
    assert_eq!(sizes(&pages), [2, 1], "{pages:?}");
    assert_eq!(union_of(&pages), serials);
}

#[tokio::test]
async fn max_items_defaults_to_100_and_is_bounded() {
    strict_iam::require().await;
    let iam = strict_iam::client_in_account(&strict_iam::unique_account()).await;
    let users: Vec<String> = (0..101).map(|i| format!("many-{i:03}")).collect();
    create_users(&iam, &users, "/").await;

    let first = iam.list_users().send().await.expect("list users");
    assert_eq!((first.users.len(), first.is_truncated), (100, true));
    let rest = iam.list_users().set_marker(first.marker.clone()).send().await.expect("second page");
    assert_eq!((rest.users.len(), rest.is_truncated, rest.marker.as_deref()), (1, false, None));
    let listed: BTreeSet<String> = first.users.into_iter().chain(rest.users).map(|u| u.user_name).collect();
    assert_eq!(listed, users.into_iter().collect());

    for (what, max_items) in [("MaxItems=0", 0), ("MaxItems=1001", 1001)] {
        let refused = refusal(what, iam.list_users().max_items(max_items).send().await);
        assert_eq!((refused.status, refused.code.as_str()), (400, "ValidationError"), "{what}: {refused:?}");
    }
    let refused = refusal("a marker IAM never gave", iam.list_users().marker("not-a-marker").send().await);
    assert_eq!((refused.status, refused.code.as_str()), (400, "ValidationError"), "{refused:?}");
}

#[tokio::test]
async fn console_cleanup_deletes_every_unassigned_device_of_the_account_only() {
    let home = setup().await;
    let account = strict_iam::unique_account();
    let iam = strict_iam::client_in_account(&account).await;
    let user = "console-user";
    iam::create_user(&iam, user, "/").await;
    let (assigned, seed) = new_device(&iam, "console-assigned").await;
    enable_now(&iam, user, &assigned, &seed).await;
    let mut unassigned = BTreeSet::new();
    for i in 0..3 {
        unassigned.insert(new_device(&iam, &format!("console-pending-{i}")).await.0);
    }
    // An unassigned device in the shared account, which the cleanup must not touch.
    let (elsewhere, _) = new_device(&home, &common::unique("strict-elsewhere")).await;

    let deleted: BTreeSet<String> = strict_iam::console_cleanup(Some(&account)).await.into_iter().collect();

    assert_eq!(deleted, unassigned);
    let left = iam::virtual_devices(&iam).await;
    assert_eq!(left, [(assigned.clone(), Some(user.to_owned()))], "devices left in {account}");
    assert_eq!(devices_of(&iam, user).await, [assigned]);
    assert_eq!(assignment(&home, &elsewhere).await, Some(None), "the cleanup reached another account");
    home.delete_virtual_mfa_device().serial_number(&elsewhere).send().await.expect("tidy up");
}
