//! Exact, synchronous tests of the pure planner: every case asserts the whole work list
//! and the users' planned status.
//!
//! The inventory is built the way a reconcile builds it: [`Inventory::from_parts`] for the
//! sweeps, then [`Inventory::resolve`] (driven by a fake `ListMFADevices` that answers at
//! once) for the selected users no assigned virtual device covers, unless a test leaves a
//! user unresolved on purpose.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::aws::fake::Account;
use crate::aws::{IamUser, MfaDevice, Seed, VirtualDevice};
use crate::controller::seed_secret::Untrusted;
use crate::crd::{Delivery, UserSelector};
use crate::totp::{CodeRejection, MAX_AGE_STEPS, MAX_AHEAD_STEPS, WhichCode, code_at, step_of};

const ACCOUNT: &str = "123456789012";
const PATH: &str = "/mfa-operator/";
/// The planner's clock: 10 seconds into a 30-second TOTP step.
const NOW: Timestamp = Timestamp::constant(1_750_000_000, 0);
/// When the seed Secrets of the tests were created: an hour before `NOW`.
const CREATED: Timestamp = Timestamp::constant(1_750_000_000 - 3600, 0);
/// `pendingTTL` of every test spec.
const TTL: SignedDuration = SignedDuration::from_hours(168);
/// The seed stored in the tests' seed Secrets.
const SEED: &str = "JBSWY3DPEHPK3PXP";
/// A different seed: an authenticator entry for some other device.
const OTHER_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn id(namespace: &str, name: &str) -> EnrollmentId {
    EnrollmentId { namespace: namespace.into(), name: name.into() }
}

/// The enrollment being planned.
fn me() -> EnrollmentId {
    id("team", "enroll")
}

/// Another enrollment of the same account.
fn other() -> EnrollmentId {
    id("infra", "older")
}

/// Serial of `user`'s device under the enrollment's path.
fn serial(user: &str) -> String {
    device_serial(ACCOUNT, PATH, user)
}

fn spec(mode: Mode) -> MfaEnrollmentSpec {
    MfaEnrollmentSpec {
        delivery: None,
        link: None,
        mode,
        users: UserSelector { path_prefix: Some("/".into()), ..UserSelector::default() },
        account_ref: None,
        device: None,
        pending_ttl: std::time::Duration::from_secs(168 * 3600).into(),
        aws: None,
        resync_interval: std::time::Duration::from_secs(600).into(),
    }
}

fn iam_user(name: &str) -> IamUser {
    IamUser {
        name: name.into(),
        path: "/".into(),
        arn: format!("arn:aws:iam::{ACCOUNT}:user/{name}"),
        groups: Vec::new(),
        tags: BTreeMap::new(),
    }
}

fn assigned_to(serial: &str, user: &str) -> VirtualDevice {
    VirtualDevice { serial: serial.into(), user: Some(user.into()), enabled_at: Some(CREATED) }
}

fn unassigned(serial: &str) -> VirtualDevice {
    VirtualDevice { serial: serial.into(), user: None, enabled_at: None }
}

/// `user`'s seed Secret for the device under our path, created at `CREATED`, no codes.
fn seed_secret(user: &str) -> SeedSecret {
    SeedSecret {
        name: secret_name(&me().name, user),
        user: user.into(),
        serial: serial(user),
        seed: Seed::new(SEED),
        codes: None,
        partial_codes: false,
        created: CREATED,
        resource_version: Some("42".into()),
    }
}

fn with_codes(mut secret: SeedSecret, codes: (String, String)) -> SeedSecret {
    secret.codes = Some(codes);
    secret
}

fn key(seed: &str) -> Vec<u8> {
    totp::decode_seed(seed).expect("test seeds are valid base32")
}

/// The step that contains `NOW`.
fn n() -> u64 {
    step_of(NOW.as_second())
}

/// Two consecutive codes of `SEED` whose second code belongs to `end`.
fn pair_ending(end: u64) -> (String, String) {
    let key = key(SEED);
    (code_at(&key, end - 1), code_at(&key, end))
}

/// Codes that no step of `SEED` near `NOW` produces (as far back and ahead as
/// `verify_pair` looks), distinct from each other.
fn codes_not_in_window() -> (String, String) {
    let key = key(SEED);
    let window: BTreeSet<String> =
        (n() - MAX_AGE_STEPS - 1..=n() + MAX_AHEAD_STEPS).map(|step| code_at(&key, step)).collect();
    let mut outside = (0..1_000_000u32).map(|v| format!("{v:06}")).filter(|c| !window.contains(c));
    let first = outside.next().expect("a code outside the window");
    let second = outside.next().expect("another code outside the window");
    (first, second)
}

/// One account, one enrollment's view of it, and its peers' claims and ownership.
#[derive(Clone)]
struct World {
    mode: Mode,
    account_users: BTreeSet<String>,
    devices: Vec<VirtualDevice>,
    /// `ListMFADevices` answers (absent: no device at all).
    listed: BTreeMap<String, Vec<MfaDevice>>,
    /// Selected users left unresolved (as if `ListMFADevices` had not been asked).
    unresolved: BTreeSet<String>,
    selection: Selection,
    owners: BTreeMap<String, EnrollmentId>,
    secrets: Vec<SeedSecret>,
    untrusted: Vec<Untrusted>,
    refusals: BTreeMap<String, Refusals>,
    received: BTreeMap<String, Timestamp>,
    claims: Claims,
    delivery: Option<Delivery>,
    links: BTreeMap<String, link::Record>,
    held: BTreeSet<String>,
}

impl World {
    /// `selected` exist in the account and are selected. In Enroll mode this enrollment
    /// owns them (it is the only Enroll-mode enrollment); Report-mode enrollments own
    /// nobody.
    fn new(mode: Mode, selected: &[&str]) -> Self {
        let users: BTreeSet<String> = selected.iter().map(|u| (*u).to_owned()).collect();
        let owners = match mode {
            Mode::Enroll => users.iter().map(|u| (u.clone(), me())).collect(),
            Mode::Report => BTreeMap::new(),
        };
        Self {
            mode,
            account_users: users.clone(),
            devices: Vec::new(),
            listed: BTreeMap::new(),
            unresolved: BTreeSet::new(),
            selection: Selection { users, ..Selection::default() },
            owners,
            secrets: Vec::new(),
            untrusted: Vec::new(),
            refusals: BTreeMap::new(),
            received: BTreeMap::new(),
            claims: Claims::new(),
            delivery: None,
            links: BTreeMap::new(),
            held: BTreeSet::new(),
        }
    }

    /// `delivery: Link`.
    fn by_link(mut self) -> Self {
        self.delivery = Some(Delivery::Link);
        self
    }

    /// A link record for `user`, minted at `minted`.
    fn link(mut self, user: &str, minted: Timestamp, used: bool) -> Self {
        let purpose = link::Purpose { account: ACCOUNT.into(), user: user.into(), enrollment_uid: "uid".into() };
        let (_, mut record) = link::mint(purpose, [1; link::TOKEN_BYTES], minted, link::DEFAULT_TTL);
        record.used_at = used.then_some(minted);
        self.links.insert(user.into(), record);
        self
    }

    fn held(mut self, serial: &str) -> Self {
        self.held.insert(serial.into());
        self
    }

    fn enroll(selected: &[&str]) -> Self {
        Self::new(Mode::Enroll, selected)
    }

    fn report(selected: &[&str]) -> Self {
        Self::new(Mode::Report, selected)
    }

    /// A user of the account that this enrollment does not select.
    fn account_user(mut self, name: &str) -> Self {
        self.account_users.insert(name.into());
        self
    }

    fn device(mut self, device: VirtualDevice) -> Self {
        self.devices.push(device);
        self
    }

    /// `user` has an active virtual device (under our path) assigned.
    fn assigned(self, user: &str) -> Self {
        self.device(assigned_to(&serial(user), user))
    }

    /// `ListMFADevices` reports these `(serial, active)` devices for `user`.
    fn listed(mut self, user: &str, devices: &[(&str, bool)]) -> Self {
        self.listed.insert(
            user.into(),
            devices
                .iter()
                .map(|(serial, active)| MfaDevice { serial: (*serial).into(), enabled_at: active.then_some(CREATED) })
                .collect(),
        );
        self
    }

    fn unresolved(mut self, user: &str) -> Self {
        self.unresolved.insert(user.into());
        self
    }

    fn not_found(mut self, name: &str) -> Self {
        self.selection.not_found.insert(name.into());
        self
    }

    fn owner(mut self, user: &str, owner: EnrollmentId) -> Self {
        self.owners.insert(user.into(), owner);
        self
    }

    /// One of this enrollment's seed Secrets; it also claims its device, as the claims
    /// loaded from every seed Secret do.
    fn secret(mut self, secret: SeedSecret) -> Self {
        self.claims.entry(secret.serial.clone()).or_default().push(me());
        self.secrets.push(secret);
        self
    }

    /// The status last written counts `failed` refused submissions (the last with
    /// `message`) for `user`'s device created at `CREATED`.
    fn refused(mut self, user: &str, failed: u32, last: Option<&str>) -> Self {
        let refusals = Refusals { pending_since: Some(CREATED), failed_attempts: failed, last: last.map(Into::into) };
        self.refusals.insert(user.into(), refusals);
        self
    }

    /// A Secret at `name` with this enrollment's labels whose tag does not verify.
    fn untrusted(mut self, name: &str) -> Self {
        self.untrusted.push(Untrusted { name: name.into(), why: "was changed by someone other than the operator" });
        self
    }

    /// A seed Secret of `holder` (which may be a stale one of ours) claims `serial`.
    fn claim(mut self, serial: &str, holder: EnrollmentId) -> Self {
        self.claims.entry(serial.into()).or_default().push(holder);
        self
    }

    fn inventory(&self) -> Inventory {
        let users = self.account_users.iter().map(|u| iam_user(u)).collect();
        let mut inventory = Inventory::from_parts(NOW, users, self.devices.clone(), None);
        let to_resolve =
            inventory.unresolved(&self.selection.users).into_iter().filter(|u| !self.unresolved.contains(u)).collect();
        let mut iam = Account::new().with_users(self.account_users.iter().map(|u| iam_user(u))).read_only();
        for (user, devices) in &self.listed {
            iam = iam.with_listed(user, devices.clone());
        }
        futures::executor::block_on(inventory.resolve(&iam, to_resolve)).expect("the fake ListMFADevices never fails");
        assert!(iam.calls().iter().all(|c| c.starts_with("ListMFADevices ")), "resolve only lists MFA devices");
        inventory
    }

    fn run(&self) -> Plan {
        let inventory = self.inventory();
        let spec = MfaEnrollmentSpec { delivery: self.delivery, ..spec(self.mode) };
        let id = me();
        decide(&DecideInput {
            id: &id,
            spec: &spec,
            device_path: PATH,
            now: NOW,
            inventory: &inventory,
            selection: &self.selection,
            owners: &self.owners,
            secrets: &self.secrets,
            untrusted: &self.untrusted,
            refusals: &self.refusals,
            received: &self.received,
            claims: &self.claims,
            links: &self.links,
            held: &self.held,
        })
    }
}

fn status(name: &str, state: UserState, message: Option<&str>) -> UserRow {
    UserRow {
        name: name.into(),
        state,
        serial: None,
        secret: None,
        pending_since: None,
        expires_at: None,
        message: message.map(Into::into),
        failed_attempts: 0,
        link_sent_at: None,
        link_expires_at: None,
    }
}

fn compliant(name: &str) -> UserRow {
    status(name, UserState::Compliant, None)
}

fn scan_message(user: &str) -> String {
    format!(
        "scan the QR code in Secret {} and write two consecutive codes as code1 and code2",
        secret_name(&me().name, user)
    )
}

/// The status of a user whose new pending device is created by this reconcile.
fn created(user: &str) -> UserRow {
    UserRow {
        name: user.into(),
        state: UserState::Pending,
        serial: Some(serial(user)),
        secret: Some(secret_name(&me().name, user)),
        pending_since: Some(NOW),
        expires_at: Some(NOW + TTL),
        message: Some(scan_message(user)),
        failed_attempts: 0,
        link_sent_at: None,
        link_expires_at: None,
    }
}

/// The status of a user whose pending device (from `secret`) waits for codes.
fn waiting(secret: &SeedSecret, message: &str) -> UserRow {
    let created = secret.created;
    UserRow {
        name: secret.user.clone(),
        state: UserState::Pending,
        serial: Some(secret.serial.clone()),
        secret: Some(secret.name.clone()),
        pending_since: Some(created),
        expires_at: Some(created + TTL),
        message: Some(message.into()),
        failed_attempts: 0,
        link_sent_at: None,
        link_expires_at: None,
    }
}

/// What follows when AWS refuses codes the local check accepted: the same as a local
/// refusal, counted as refusal `attempts`.
fn refused_by_aws(secret: &SeedSecret, attempts: u32) -> IfRefused {
    let message = format!(
        "AWS did not accept them: wait for a new code, then submit two fresh consecutive codes (AWS may consider \
         these too old) (refused submission {attempts} of 5)"
    );
    IfRefused {
        row: UserRow { failed_attempts: attempts, ..waiting(secret, &format!("codes refused: {message}")) },
        note: EventNote {
            reason: EventReason::CodesRejected,
            message: format!("codes for {} refused: {message}", secret.user),
        },
        message,
    }
}

fn note(reason: EventReason, message: &str) -> Option<EventNote> {
    Some(EventNote { reason, message: message.into() })
}

fn work(user: Option<&str>, steps: Vec<Step>, note: Option<EventNote>) -> Decision {
    Decision { user: user.map(Into::into), steps, note }
}

fn create_pending(user: &str) -> Step {
    Step::CreatePending { user: user.into(), at: jiff::Timestamp::from_second(NOW.as_second()).expect("valid") }
}

fn delete_device(serial: &str) -> Step {
    Step::DeleteDevice { serial: serial.into() }
}

fn delete_secret(user: &str) -> Step {
    Step::DeleteSecret { name: secret_name(&me().name, user) }
}

/// The work of a first pending device for `user`.
fn first_device(user: &str) -> Decision {
    work(
        Some(user),
        vec![create_pending(user)],
        note(EventReason::DeviceCreated, &format!("pending device created for {user}")),
    )
}

/// The work replacing `user`'s pending device after `before`, for reason `why`.
fn replacement(user: &str, mut before: Vec<Step>, why: &str) -> Decision {
    before.push(create_pending(user));
    work(Some(user), before, note(EventReason::SeedRotated, &format!("new pending device for {user}: {why}")))
}

/// The rotation of `user`'s pending device (device and Secret of `secret`), for `why`.
fn rotation(secret: &SeedSecret, why: &str) -> Decision {
    replacement(
        &secret.user,
        vec![delete_device(&secret.serial), Step::DeleteSecret { name: secret.name.clone() }],
        why,
    )
}

fn orphan_deletion(serial: &str) -> Decision {
    work(
        None,
        vec![delete_device(serial)],
        note(
            EventReason::OrphanDeviceDeleted,
            &format!("deleted unassigned device {serial} that no seed Secret claims"),
        ),
    )
}

fn owned_by_other(user: &str) -> UserRow {
    status(
        user,
        UserState::Pending,
        Some(&format!("enrollment is handled by {}, the oldest enrollment selecting this user", other())),
    )
}

// ---------------------------------------------------------------------------------------
// Report mode

#[test]
fn report_mode_lists_users_without_mfa_as_missing_and_plans_no_work() {
    let plan = World::report(&["alice", "bob", "carol", "dave", "erin"])
        .assigned("bob")
        .listed("carol", &[("arn:aws:iam::123456789012:u2f/user/carol/key", true)])
        .listed("dave", &[("GAHT12345678", false)])
        .unresolved("erin")
        .run();
    let missing = Some("no active MFA device");
    assert_eq!(plan.decisions, []);
    assert_eq!(
        plan.users,
        [
            status("alice", UserState::Missing, missing),
            compliant("bob"),
            compliant("carol"),
            status("dave", UserState::Missing, missing),
            status("erin", UserState::Missing, missing),
        ]
    );
}

#[test]
fn report_mode_never_writes_even_with_leftovers_from_enrolling() {
    // A Report enrollment that used to enroll keeps its seed Secret and pending device
    // (deleting the enrollment or enrolling again deals with them); nor does it sweep
    // orphans: Report never writes to AWS.
    let alice = seed_secret("alice");
    let plan = World::report(&["alice", "bob"])
        .assigned("bob")
        .device(unassigned(&alice.serial))
        .secret(alice.clone())
        .device(unassigned(&serial("ghost")))
        .refused("alice", 3, None)
        .run();
    assert_eq!(plan.decisions, []);
    // The pending device's refusal count survives the mode switch (Enroll again must not
    // start the guess limit over).
    let alice_status = UserRow {
        pending_since: Some(CREATED),
        failed_attempts: 3,
        ..status("alice", UserState::Missing, Some("no active MFA device"))
    };
    assert_eq!(plan.users, [alice_status, compliant("bob")]);
}

#[test]
fn seeds_die_with_enablement_in_report_mode_too() {
    // The device was enabled but the Secret survived (lost response, crash, then the
    // enrollment switched to Report): the live seed goes; the device is never touched.
    let alice = seed_secret("alice");
    let plan = World::report(&["alice"]).assigned("alice").secret(alice.clone()).run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("alice")], None)]);
    assert_eq!(plan.users, [compliant("alice")]);
    // Enabled another device: the pending one stays (Report never writes to AWS).
    let plan = World::report(&["alice"])
        .device(assigned_to("arn:aws:iam::123456789012:mfa/alice-phone", "alice"))
        .device(unassigned(&alice.serial))
        .secret(alice)
        .run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("alice")], None)]);
}

// ---------------------------------------------------------------------------------------
// Untrusted Secrets: replaced and reported, never obeyed

#[test]
fn a_tampered_secret_of_a_selected_user_is_replaced_with_a_new_device() {
    let name = secret_name(&me().name, "alice");
    let plan = World::enroll(&["alice"]).device(unassigned(&serial("alice"))).untrusted(&name).run();
    let why = format!("Secret {name} was changed by someone other than the operator; it was replaced");
    assert_eq!(
        plan.decisions,
        [work(
            Some("alice"),
            vec![delete_secret("alice"), delete_device(&serial("alice")), create_pending("alice")],
            note(EventReason::SeedSecretTampered, &format!("new pending device for alice: {why}")),
        )]
    );
    let message = format!("{why}: scan the new QR code in Secret {name}");
    assert_eq!(plan.users, [UserRow { message: Some(message), ..created("alice") }]);
    // The device it replaces is derived: no Secret content chose it, and another
    // enrollment's device is never deleted for it.
    let plan = World::enroll(&["alice"])
        .device(unassigned(&serial("alice")))
        .claim(&serial("alice"), other())
        .untrusted(&name)
        .run();
    assert_eq!(deleted_devices(&plan), Vec::<String>::new());
}

#[test]
fn a_tampered_secret_goes_where_nothing_is_created_for_the_user() {
    let name = secret_name(&me().name, "alice");
    let removal = work(
        None,
        vec![Step::DeleteSecret { name: name.clone() }],
        note(
            EventReason::SeedSecretTampered,
            &format!("deleted Secret {name}: it was changed by someone other than the operator"),
        ),
    );
    // alice is compliant (in either mode: it may hold her live seed) ...
    for world in [World::enroll(&["alice"]), World::report(&["alice"])] {
        let plan = world.assigned("alice").untrusted(&name).run();
        assert_eq!(plan.decisions, std::slice::from_ref(&removal));
        assert_eq!(plan.users, [compliant("alice")]);
    }
    // ... or another enrollment enrolls her.
    let plan = World::enroll(&["alice"]).owner("alice", other()).untrusted(&name).run();
    assert_eq!(plan.decisions, [removal]);
    assert_eq!(deleted_devices(&plan), Vec::<String>::new());
}

#[test]
fn a_look_alike_secret_elsewhere_is_deleted_and_never_touches_a_device() {
    let plan = World::enroll(&["alice"]).assigned("alice").untrusted("mfa-seed-forged").run();
    assert_eq!(
        plan.decisions,
        [work(
            None,
            vec![Step::DeleteSecret { name: "mfa-seed-forged".into() }],
            note(
                EventReason::SeedSecretTampered,
                "deleted Secret mfa-seed-forged: it was changed by someone other than the operator",
            ),
        )]
    );
    // Report mode writes nothing for it.
    assert_eq!(World::report(&["alice"]).assigned("alice").untrusted("mfa-seed-forged").run().decisions, []);
}

#[test]
fn refusals_by_aws_count_towards_rotation_and_only_for_the_same_device() {
    let alice = seed_secret("alice");
    // Five refusals recorded (the last by AWS) for this device: rotated at once.
    let plan = World::enroll(&["alice"])
        .device(unassigned(&alice.serial))
        .refused("alice", MAX_FAILED_ATTEMPTS, None)
        .secret(alice.clone())
        .run();
    assert_eq!(plan.decisions, [rotation(&alice, "5 code submissions were refused")]);
    // Refusals recorded for an older device of alice's do not count against this one.
    let mut world = World::enroll(&["alice"]).device(unassigned(&alice.serial)).refused("alice", 4, None);
    world.refusals.get_mut("alice").expect("recorded").pending_since = Some(CREATED - SignedDuration::from_hours(1));
    let plan = world.secret(alice.clone()).run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [waiting(&alice, &scan_message("alice"))]);
}

#[test]
fn codes_are_sent_exactly_as_the_six_digits_checked() {
    let (code1, code2) = pair_ending(n());
    let alice = with_codes(seed_secret("alice"), (format!(" {code1}\n"), format!("{code2}\r\n")));
    let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice).run();
    let [Decision { steps, .. }] = plan.decisions.as_slice() else { panic!("{:?}", plan.decisions) };
    assert!(
        matches!(steps.as_slice(), [Step::Enable { codes, .. }] if codes.code1 == code1 && codes.code2 == code2),
        "{steps:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Enroll mode: first device, compliant users, unresolved users

#[test]
fn enroll_creates_a_pending_device_for_a_user_without_any_device() {
    let plan = World::enroll(&["alice"]).run();
    assert_eq!(plan.decisions, [first_device("alice")]);
    assert_eq!(plan.users, [created("alice")]);
}

#[test]
fn enroll_treats_only_inactive_listed_devices_as_no_device() {
    let plan = World::enroll(&["alice"]).listed("alice", &[("GAHT12345678", false)]).run();
    assert_eq!(plan.decisions, [first_device("alice")]);
    assert_eq!(plan.users, [created("alice")]);
}

#[test]
fn enroll_leaves_users_with_any_active_device_alone() {
    let plan = World::enroll(&["alice", "bob", "carol", "dave"])
        // A virtual device of ours, enabled.
        .assigned("alice")
        // A virtual device outside our path.
        .device(assigned_to("arn:aws:iam::123456789012:mfa/bob-phone", "bob"))
        // A FIDO key and a hardware token, known through ListMFADevices only.
        .listed("carol", &[("arn:aws:iam::123456789012:u2f/user/carol/k", true)])
        .listed("dave", &[("GAHT12345678", true), ("GAHT87654321", false)])
        .run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [compliant("alice"), compliant("bob"), compliant("carol"), compliant("dave")]);
}

#[test]
fn enroll_plans_nothing_for_a_user_whose_devices_are_not_listed_yet() {
    let plan = World::enroll(&["alice", "bob"]).unresolved("alice").run();
    assert_eq!(plan.decisions, [first_device("bob")]);
    assert_eq!(plan.users, [status("alice", UserState::Missing, Some("MFA devices not listed yet")), created("bob"),]);
}

#[test]
fn compliant_user_with_a_leftover_secret_releases_it_and_never_its_enabled_device() {
    // Crash between EnableMFADevice and the Secret's deletion: the Secret's device is the
    // one now assigned.
    let alice = seed_secret("alice");
    let plan = World::enroll(&["alice"]).assigned("alice").secret(alice.clone()).run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("alice")], None)]);
    assert_eq!(plan.users, [compliant("alice")]);

    // The person enabled another device meanwhile: our pending device goes too.
    let plan = World::enroll(&["alice"])
        .device(assigned_to("arn:aws:iam::123456789012:mfa/alice-phone", "alice"))
        .device(unassigned(&alice.serial))
        .secret(alice.clone())
        .run();
    assert_eq!(plan.decisions, [work(None, vec![delete_device(&alice.serial), delete_secret("alice")], None)]);
    assert_eq!(plan.users, [compliant("alice")]);

    // ...unless another enrollment's Secret holds that device as well.
    let plan = World::enroll(&["alice"])
        .listed("alice", &[("GAHT12345678", true)])
        .device(unassigned(&alice.serial))
        .secret(alice)
        .claim(&serial("alice"), other())
        .run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("alice")], None)]);
    assert_eq!(plan.users, [compliant("alice")]);
}

// ---------------------------------------------------------------------------------------
// Pending users and code submissions

#[test]
fn pending_user_without_codes_waits_with_serial_secret_and_expiry() {
    let alice = seed_secret("alice");
    let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice.clone()).run();
    assert_eq!(plan.decisions, []);
    let expected = UserRow {
        name: "alice".into(),
        state: UserState::Pending,
        serial: Some("arn:aws:iam::123456789012:mfa/mfa-operator/alice".into()),
        secret: Some(secret_name(&me().name, "alice")),
        pending_since: Some(CREATED),
        expires_at: Some(Timestamp::constant(1_750_000_000 - 3600 + 168 * 3600, 0)),
        message: Some(scan_message("alice")),
        failed_attempts: 0,
        link_sent_at: None,
        link_expires_at: None,
    };
    assert_eq!(plan.users, [expected]);
}

#[test]
fn pending_message_explains_a_partial_submission_and_the_last_refusal() {
    let mut alice = seed_secret("alice");
    alice.partial_codes = true;
    let world = World::enroll(&["alice"]).device(unassigned(&alice.serial)).refused(
        "alice",
        1,
        Some("codes refused: an older refusal"),
    );
    let plan = world.clone().secret(alice.clone()).run();
    assert_eq!(plan.decisions, []);
    let partial = format!("only one code in Secret {}: write both code1 and code2", alice.name);
    assert_eq!(plan.users, [UserRow { failed_attempts: 1, ..waiting(&alice, &partial) }]);

    alice.partial_codes = false;
    let plan = world.secret(alice.clone()).run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [UserRow { failed_attempts: 1, ..waiting(&alice, "codes refused: an older refusal") }]);
}

#[test]
fn fresh_valid_codes_enable_the_device_within_one_step_of_skew() {
    for end in [n() - 1, n(), n() + 1] {
        let codes = pair_ending(end);
        let alice = with_codes(seed_secret("alice"), codes.clone());
        let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice.clone()).run();
        assert_eq!(
            plan.decisions,
            [work(
                Some("alice"),
                vec![Step::Enable {
                    user: "alice".into(),
                    serial: alice.serial.clone(),
                    secret: alice.name.clone(),
                    codes: Codes { code1: codes.0, code2: codes.1 },
                    if_refused: Box::new(refused_by_aws(&alice, 1)),
                }],
                note(EventReason::MfaEnabled, "MFA enabled for alice"),
            )],
            "pair ending at step n{:+}",
            i128::from(end) - i128::from(n())
        );
        assert_eq!(plan.users, [compliant("alice")]);
    }
}

#[test]
fn valid_codes_still_enable_a_device_past_its_ttl() {
    let codes = pair_ending(n());
    let mut alice = with_codes(seed_secret("alice"), codes);
    alice.created = NOW - TTL - SignedDuration::from_hours(1);
    let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice.clone()).run();
    assert!(
        matches!(plan.decisions.as_slice(), [Decision { steps, .. }] if matches!(steps.as_slice(), [Step::Enable { .. }])),
        "{:?}",
        plan.decisions
    );
    assert_eq!(plan.users, [compliant("alice")]);
}

#[test]
fn codes_that_do_not_enable_never_keep_a_device_past_its_ttl() {
    let (outside1, outside2) = codes_not_in_window();
    let stale = pair_ending(n() - 4);
    for codes in [(outside1, outside2), stale] {
        let mut alice = with_codes(seed_secret("alice"), codes);
        alice.created = NOW - TTL;
        let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice.clone()).run();
        assert_eq!(plan.decisions, [rotation(&alice, "it was not enabled within pendingTTL")]);
    }
}

#[test]
fn a_replayed_older_secret_is_tampering() {
    // The status records alice's current device as created at CREATED; a verified Secret
    // from an earlier device (same name, serial and tag scheme) is put back.
    let mut old = seed_secret("alice");
    old.created = CREATED - SignedDuration::from_hours(2);
    let plan =
        World::enroll(&["alice"]).device(unassigned(&serial("alice"))).refused("alice", 4, None).secret(old).run();
    let [Decision { steps, note, .. }] = plan.decisions.as_slice() else { panic!("{:?}", plan.decisions) };
    assert_eq!(steps, &[delete_secret("alice"), delete_device(&serial("alice")), create_pending("alice")]);
    assert_eq!(note.as_ref().map(|n| n.reason), Some(EventReason::SeedSecretTampered));
    assert!(plan.users[0].message.as_deref().is_some_and(|m| m.contains("older copy")), "{:?}", plan.users);
}

#[test]
fn refused_codes_are_rejected_with_the_reason_and_the_submission_count() {
    let key = key(SEED);
    let other_key = totp::decode_seed(OTHER_SEED).expect("valid base32");
    let (outside1, outside2) = codes_not_in_window();
    let fresh = pair_ending(n());
    let cases: Vec<((String, String), CodeRejection)> = vec![
        (("12345".into(), fresh.1.clone()), CodeRejection::Malformed { which: WhichCode::First }),
        ((fresh.0.clone(), "12a456".into()), CodeRejection::Malformed { which: WhichCode::Second }),
        ((String::new(), String::new()), CodeRejection::Malformed { which: WhichCode::First }),
        ((fresh.1.clone(), fresh.1.clone()), CodeRejection::SameCodeTwice),
        ((code_at(&key, n() - 1), code_at(&key, n() + 1)), CodeRejection::NotConsecutive),
        (
            // The pair ended 4 steps before the current one: 2 min 10 s ago.
            pair_ending(n() - 4),
            CodeRejection::Stale { age_secs: 130 },
        ),
        (
            // The pair ends 3 steps after the current one: 1 min 20 s ahead.
            pair_ending(n() + 3),
            CodeRejection::ClockAhead { ahead_secs: 80 },
        ),
        // One right code is refused exactly as none.
        ((fresh.0.clone(), outside2.clone()), CodeRejection::Mismatch),
        ((outside1, outside2), CodeRejection::Mismatch),
    ];
    // Codes of another authenticator entry are refused too (whatever the classification).
    let foreign = (code_at(&other_key, n() - 1), code_at(&other_key, n()));
    assert_ne!(foreign, fresh);

    for failed_attempts in 0..MAX_FAILED_ATTEMPTS - 1 {
        for (codes, rejection) in &cases {
            let alice = with_codes(seed_secret("alice"), codes.clone());
            let plan = World::enroll(&["alice"])
                .device(unassigned(&alice.serial))
                .refused("alice", failed_attempts, None)
                .secret(alice.clone())
                .run();
            // Late or early codes prove the person holds the seed: they are explained but
            // do not count towards replacing the device.
            let timing = matches!(rejection, CodeRejection::Stale { .. } | CodeRejection::ClockAhead { .. });
            let attempts = failed_attempts + u32::from(!timing);
            let (message, cause) = if timing {
                (rejection.to_string(), RefusalCause::Timing)
            } else {
                (format!("{rejection} (refused submission {attempts} of 5)"), RefusalCause::Guess)
            };
            assert_eq!(
                plan.decisions,
                [work(
                    Some("alice"),
                    vec![Step::RejectCodes { secret: alice.name.clone(), attempts, message: message.clone(), cause }],
                    note(EventReason::CodesRejected, &format!("codes for alice refused: {message}")),
                )],
                "{rejection:?} after {failed_attempts} refusals"
            );
            assert_eq!(
                plan.users,
                [UserRow { failed_attempts: attempts, ..waiting(&alice, &format!("codes refused: {message}")) }],
                "{rejection:?} after {failed_attempts} refusals"
            );
        }
        let alice = with_codes(seed_secret("alice"), foreign.clone());
        let plan = World::enroll(&["alice"])
            .device(unassigned(&alice.serial))
            .refused("alice", failed_attempts, None)
            .secret(alice)
            .run();
        assert!(
            matches!(plan.decisions.as_slice(), [Decision { steps, .. }] if matches!(steps.as_slice(), [Step::RejectCodes { .. }])),
            "{:?}",
            plan.decisions
        );
    }
}

#[test]
fn refusal_messages_never_contain_the_codes_or_the_seed() {
    let (outside1, outside2) = codes_not_in_window();
    let alice = with_codes(seed_secret("alice"), (outside1.clone(), outside2.clone()));
    let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice).run();
    let text = format!("{plan:?}");
    for secret in [outside1.as_str(), outside2.as_str(), SEED] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[test]
fn fifth_refused_submission_rotates_the_device() {
    let (outside1, outside2) = codes_not_in_window();
    // The fifth refusal rotates; a count already at the limit (AWS refused the last codes)
    // rotates before anything is checked.
    for (failed_attempts, why) in [(4, "5 code submissions were refused"), (9, "9 code submissions were refused")] {
        let alice = with_codes(seed_secret("alice"), (outside1.clone(), outside2.clone()));
        let plan = World::enroll(&["alice"])
            .device(unassigned(&alice.serial))
            .refused("alice", failed_attempts, None)
            .secret(alice.clone())
            .run();
        assert_eq!(
            plan.decisions,
            [replacement("alice", vec![delete_device(&alice.serial), delete_secret("alice")], why)]
        );
        assert_eq!(plan.decisions, [rotation(&alice, why)]);
        assert_eq!(plan.users, [created("alice")]);
    }
}

#[test]
fn submitted_codes_with_an_unreadable_seed_rotate_the_device() {
    let mut alice = with_codes(seed_secret("alice"), pair_ending(n()));
    alice.seed = Seed::new("not base32!");
    let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice.clone()).run();
    assert_eq!(plan.decisions, [rotation(&alice, "its seed could not be read")]);
    assert_eq!(plan.users, [created("alice")]);
}

#[test]
fn pending_device_is_rotated_once_its_ttl_is_reached() {
    // Exactly at the TTL: rotated.
    let mut alice = seed_secret("alice");
    alice.created = NOW - TTL;
    let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice.clone()).run();
    assert_eq!(plan.decisions, [rotation(&alice, "it was not enabled within pendingTTL")]);
    assert_eq!(plan.users, [created("alice")]);

    // A second before: still waiting.
    alice.created = NOW - TTL + SignedDuration::from_secs(1);
    let plan = World::enroll(&["alice"]).device(unassigned(&alice.serial)).secret(alice.clone()).run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [waiting(&alice, &scan_message("alice"))]);
    assert_eq!(plan.users[0].expires_at, Some(NOW + SignedDuration::from_secs(1)));
}

// ---------------------------------------------------------------------------------------
// Crash consistency

#[test]
fn secret_whose_device_is_gone_is_replaced() {
    let alice = seed_secret("alice");
    let plan = World::enroll(&["alice"]).secret(alice.clone()).run();
    assert_eq!(
        plan.decisions,
        [replacement("alice", vec![delete_secret("alice")], "its pending device no longer exists")]
    );
    let [user] = plan.users.as_slice() else { panic!("{:?}", plan.users) };
    assert_eq!(UserRow { message: None, ..user.clone() }, UserRow { message: None, ..created("alice") });
    let message = user.message.as_deref().unwrap_or_default();
    assert!(message.starts_with("the pending device was removed from AWS"), "{message}");
    assert!(message.contains("scan the new QR code"), "{message}");
}

#[test]
fn secret_for_a_device_under_an_old_path_that_is_gone_clears_the_new_path_too() {
    // spec.device.path changed: the Secret names a device under the old path, which is
    // gone, and an unassigned device under the new path (without a Secret) is in the way.
    let mut alice = seed_secret("alice");
    alice.serial = device_serial(ACCOUNT, "/old-path/", "alice");
    let plan = World::enroll(&["alice"]).device(unassigned(&serial("alice"))).secret(alice).run();
    assert_eq!(
        plan.decisions,
        [replacement(
            "alice",
            vec![delete_secret("alice"), delete_device(&serial("alice"))],
            "the device path changed"
        )]
    );
    assert_eq!(plan.users, [created("alice")]);
}

#[test]
fn device_of_ours_without_its_secret_is_replaced() {
    let plan = World::enroll(&["alice"]).device(unassigned(&serial("alice"))).run();
    let expected = replacement("alice", vec![delete_device(&serial("alice"))], "its seed Secret was missing");
    assert_eq!(plan.decisions, std::slice::from_ref(&expected));
    assert_eq!(plan.users, [created("alice")]);

    // Our own claim is stale (the fresh Secret list has no Secret): same.
    let plan = World::enroll(&["alice"]).device(unassigned(&serial("alice"))).claim(&serial("alice"), me()).run();
    assert_eq!(plan.decisions, [expected]);
    assert_eq!(plan.users, [created("alice")]);
}

#[test]
fn device_held_by_another_enrollments_secret_is_left_to_it() {
    let plan = World::enroll(&["alice"])
        .device(unassigned(&serial("alice")))
        .claim(&serial("alice"), me())
        .claim(&serial("alice"), other())
        .run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [status("alice", UserState::Pending, Some("pending device is held by infra/older"))]);
}

// ---------------------------------------------------------------------------------------
// Several enrollments selecting one user

#[test]
fn user_owned_by_an_older_enrollment_is_pending_without_work() {
    let plan = World::enroll(&["alice"]).owner("alice", other()).run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [owned_by_other("alice")]);

    // Even when the owner's pending device exists and is claimed.
    let plan = World::enroll(&["alice"])
        .owner("alice", other())
        .device(unassigned(&serial("alice")))
        .claim(&serial("alice"), other())
        .run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [owned_by_other("alice")]);

    // A compliant user is compliant whoever owns it.
    let plan = World::enroll(&["alice"]).owner("alice", other()).assigned("alice").run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [compliant("alice")]);
}

#[test]
fn user_owned_by_an_older_enrollment_releases_our_leftover_secret() {
    // Our device is unassigned and nobody else holds it: both go.
    let alice = seed_secret("alice");
    let plan =
        World::enroll(&["alice"]).owner("alice", other()).device(unassigned(&alice.serial)).secret(alice.clone()).run();
    assert_eq!(plan.decisions, [work(None, vec![delete_device(&alice.serial), delete_secret("alice")], None)]);
    assert_eq!(plan.users, [owned_by_other("alice")]);

    // The owner holds the device too: only our Secret goes.
    let plan = World::enroll(&["alice"])
        .owner("alice", other())
        .device(unassigned(&alice.serial))
        .secret(alice.clone())
        .claim(&alice.serial, other())
        .run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("alice")], None)]);
    assert_eq!(plan.users, [owned_by_other("alice")]);

    // The device is gone already: only our Secret goes.
    let plan = World::enroll(&["alice"]).owner("alice", other()).secret(alice).run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("alice")], None)]);
    assert_eq!(plan.users, [owned_by_other("alice")]);
}

// ---------------------------------------------------------------------------------------
// Secrets and devices of users this enrollment does not select

#[test]
fn secret_of_a_user_no_longer_selected_is_released() {
    let zoe = seed_secret("zoe");
    let removed = note(EventReason::PendingDeviceRemoved, "removed the pending device of zoe (no longer selected)");
    let plan = World::enroll(&["alice"])
        .assigned("alice")
        .account_user("zoe")
        .device(unassigned(&zoe.serial))
        .secret(zoe.clone())
        .run();
    assert_eq!(plan.decisions, [work(None, vec![delete_device(&zoe.serial), delete_secret("zoe")], removed.clone())]);
    assert_eq!(plan.users, [compliant("alice")]);

    // zoe enabled the device meanwhile (by hand): only the Secret goes.
    let plan =
        World::enroll(&["alice"]).assigned("alice").account_user("zoe").assigned("zoe").secret(zoe.clone()).run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("zoe")], removed.clone())]);

    // The user no longer exists at all, nor the device.
    let plan = World::enroll(&["alice"]).assigned("alice").secret(zoe).run();
    assert_eq!(plan.decisions, [work(None, vec![delete_secret("zoe")], removed)]);
}

#[test]
fn orphan_device_under_our_path_is_deleted() {
    let ghost = serial("ghost");
    let plan = World::enroll(&["alice"]).assigned("alice").device(unassigned(&ghost)).run();
    assert_eq!(plan.decisions, [orphan_deletion(&ghost)]);
    assert_eq!(plan.users, [compliant("alice")]);
}

#[test]
fn devices_outside_our_path_are_never_touched() {
    let plan = World::enroll(&["alice"])
        .assigned("alice")
        .device(unassigned("arn:aws:iam::123456789012:mfa/ghost"))
        .device(unassigned("arn:aws:iam::123456789012:mfa/other-tool/ghost"))
        .device(unassigned("arn:aws:iam::123456789012:mfa/mfa-operator/nested/ghost"))
        .device(unassigned("arn:aws:iam::123456789012:mfa/mfa-operator-2/ghost"))
        .run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [compliant("alice")]);
}

#[test]
fn orphan_claimed_or_owned_elsewhere_is_left_alone() {
    // Another enrollment's seed Secret claims it.
    let plan = World::enroll(&["alice"])
        .assigned("alice")
        .device(unassigned(&serial("ghost")))
        .claim(&serial("ghost"), other())
        .run();
    assert_eq!(plan.decisions, []);

    // An empty holder list is no claim.
    let plan = World::enroll(&["alice"]).assigned("alice").device(unassigned(&serial("ghost"))).run();
    let mut world = World::enroll(&["alice"]).assigned("alice").device(unassigned(&serial("ghost")));
    world.claims.insert(serial("ghost"), Vec::new());
    assert_eq!(world.run().decisions, plan.decisions);
    assert_eq!(plan.decisions, [orphan_deletion(&serial("ghost"))]);
}

#[test]
fn not_found_names_are_reported_after_the_selected_users() {
    let plan = World::enroll(&["alice"]).assigned("alice").not_found("Zed").not_found("bob").run();
    assert_eq!(plan.decisions, []);
    let gone = Some("no IAM user with this name exists in the account");
    assert_eq!(
        plan.users,
        [compliant("alice"), status("Zed", UserState::NotFound, gone), status("bob", UserState::NotFound, gone),]
    );
}

#[test]
fn work_comes_in_order_users_then_released_secrets_then_orphans() {
    let carol = seed_secret("carol");
    let zoe = seed_secret("zoe");
    let plan = World::enroll(&["alice", "bob", "carol"])
        .assigned("bob")
        .device(unassigned(&carol.serial))
        .secret(carol.clone())
        .account_user("zoe")
        .device(unassigned(&zoe.serial))
        .secret(zoe.clone())
        .device(unassigned(&serial("ghost")))
        .not_found("nobody")
        .run();
    assert_eq!(
        plan.decisions,
        [
            first_device("alice"),
            work(
                None,
                vec![delete_device(&zoe.serial), delete_secret("zoe")],
                note(EventReason::PendingDeviceRemoved, "removed the pending device of zoe (no longer selected)")
            ),
            orphan_deletion(&serial("ghost")),
        ]
    );
    assert_eq!(
        plan.users,
        [
            created("alice"),
            compliant("bob"),
            waiting(&carol, &scan_message("carol")),
            status("nobody", UserState::NotFound, Some("no IAM user with this name exists in the account")),
        ]
    );
}

#[test]
fn planning_is_deterministic() {
    let world =
        World::enroll(&["alice", "bob"]).device(unassigned(&serial("bob"))).device(unassigned(&serial("ghost")));
    assert_eq!(world.run(), world.run());
}

// ---------------------------------------------------------------------------------------
// The operator never deactivates anyone's MFA

/// Every `DeleteDevice` of a plan.
fn deleted_devices(plan: &Plan) -> Vec<String> {
    plan.decisions
        .iter()
        .flat_map(|w| &w.steps)
        .filter_map(|a| match a {
            Step::DeleteDevice { serial } => Some(serial.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn assigned_devices_are_never_deleted_in_any_scenario() {
    let (outside1, outside2) = codes_not_in_window();
    let secrets: Vec<Option<SeedSecret>> = vec![
        None,
        Some(seed_secret("alice")),
        Some(with_codes(seed_secret("alice"), pair_ending(n()))),
        Some(with_codes(seed_secret("alice"), (outside1.clone(), outside2.clone()))),
        Some(with_codes(seed_secret("alice"), (outside1, outside2))),
        Some({
            let mut expired = seed_secret("alice");
            expired.created = NOW - TTL;
            expired
        }),
        Some({
            let mut unreadable = with_codes(seed_secret("alice"), pair_ending(n()));
            unreadable.seed = Seed::new("!!");
            unreadable
        }),
    ];
    let mut scenarios = 0;
    let mut deletions = 0;
    for mode in [Mode::Enroll, Mode::Report] {
        for alice_selected in [true, false] {
            for owner in [None, Some(me()), Some(other())] {
                for secret in &secrets {
                    for claimant in [None, Some(me()), Some(other())] {
                        // alice's device under our path is assigned, to alice or (by hand)
                        // to someone else.
                        for holder in ["alice", "mallory"] {
                            let selected: &[&str] = if alice_selected { &["alice", "carol"] } else { &["carol"] };
                            let mut world = World::new(mode, selected)
                                .account_user("alice")
                                .account_user("mallory")
                                .account_user("ghost")
                                .device(assigned_to(&serial("alice"), holder))
                                // carol's Secret outlived the enabling of its device.
                                .assigned("carol")
                                .secret(seed_secret("carol"))
                                // An unselected user's device of ours, enabled.
                                .assigned("ghost")
                                .claim(&serial("ghost"), other())
                                // A true orphan, so that deletions do happen.
                                .device(unassigned(&serial("lost")));
                            world.owners.remove("alice");
                            if let Some(owner) = &owner {
                                world = world.owner("alice", owner.clone());
                            }
                            if let Some(secret) = secret {
                                world = world.secret(secret.clone());
                            }
                            if let Some(claimant) = &claimant {
                                world = world.claim(&serial("alice"), claimant.clone());
                            }
                            let assigned: BTreeSet<String> =
                                world.devices.iter().filter(|d| d.user.is_some()).map(|d| d.serial.clone()).collect();
                            let plan = world.run();
                            let deleted = deleted_devices(&plan);
                            for serial in &deleted {
                                assert!(
                                    !assigned.contains(serial),
                                    "{serial} is assigned but deleted: mode {mode:?}, alice \
                                     selected {alice_selected}, owner {owner:?}, secret \
                                     {secret:?}, claim {claimant:?}, holder {holder}: {:?}",
                                    plan.decisions
                                );
                            }
                            scenarios += 1;
                            deletions += deleted.len();
                        }
                    }
                }
            }
        }
    }
    assert_eq!(scenarios, 2 * 2 * 3 * 7 * 3 * 2);
    // Report mode never writes; in Enroll mode the orphan goes every time.
    assert!(deletions >= scenarios / 2, "the orphan is deleted in every Enroll scenario");
}

// ---------------------------------------------------------------------------------------
// Known gaps (bugs): these fail today.

#[test]
fn unclaimed_pending_device_of_a_compliant_user_is_deleted() {
    // alice got MFA elsewhere (a FIDO key) after her seed Secret was lost: her pending
    // device under our path has no Secret, no claim, and no seed anyone could enable it
    // with. Blocker #3 (7): unassigned devices under our path that no enrollment claims are
    // deleted. The planner skips every selected user's deterministic serial in the orphan
    // sweep, and decide_user only cleans up when a Secret exists, so it leaks forever.
    let plan = World::enroll(&["alice"])
        .listed("alice", &[("arn:aws:iam::123456789012:u2f/user/alice/k", true)])
        .device(unassigned(&serial("alice")))
        .run();
    assert_eq!(deleted_devices(&plan), [serial("alice")]);
}

#[test]
fn orphan_of_a_user_owned_by_an_enrollment_with_another_device_path_is_deleted() {
    // ghost is owned by another enrollment whose spec.device.path is not ours: that owner
    // only ever looks at devices under its own path, so nobody will replace or delete this
    // unclaimed (seedless) device; the planner skips it "for its owner" all the same.
    let plan = World::enroll(&["alice"])
        .assigned("alice")
        .account_user("ghost")
        .owner("ghost", other())
        .device(unassigned(&serial("ghost")))
        .run();
    assert_eq!(deleted_devices(&plan), [serial("ghost")]);
}

#[test]
fn report_mode_never_deletes_orphan_devices() {
    // README: "Report never writes to AWS". The orphan sweep runs in every mode, so a
    // read-only (Report) enrollment calls DeleteVirtualMFADevice, which its IAM policy may
    // not even allow, and which can remove the pending devices of an operator installed
    // elsewhere (another cluster or a namespace-scoped install) whose seed Secrets this
    // operator cannot see.
    let plan = World::report(&["alice"]).device(unassigned(&serial("ghost"))).run();
    assert_eq!(plan.decisions, []);
}

// ---------------------------------------------------------------------------------------
// owners

fn selection(users: &[&str]) -> Selection {
    Selection { users: users.iter().map(|u| (*u).to_owned()).collect(), ..Selection::default() }
}

fn at(second: i64) -> Option<Timestamp> {
    Some(Timestamp::constant(second, 0))
}

#[test]
fn owners_oldest_enrollment_wins_whatever_the_input_order() {
    let young = id("a-team", "young");
    let old = id("z-team", "old");
    let (s_young, s_old) = (selection(&["alice", "bob"]), selection(&["bob", "carol"]));
    let entries = [(&young, at(2_000), &s_young), (&old, at(1_000), &s_old)];
    let expected = BTreeMap::from([
        ("alice".to_owned(), young.clone()),
        ("bob".to_owned(), old.clone()),
        ("carol".to_owned(), old.clone()),
    ]);
    assert_eq!(owners(entries.iter().cloned(), None), expected);
    assert_eq!(owners(entries.iter().rev().cloned(), None), expected);
}

#[test]
fn owners_ties_on_creation_time_break_by_namespace_then_name() {
    let b_a = id("b", "a");
    let a_z = id("a", "z");
    let a_y = id("a", "y");
    let s = selection(&["alice"]);
    let entries = [(&b_a, at(1_000), &s), (&a_z, at(1_000), &s), (&a_y, at(1_000), &s)];
    let expected = BTreeMap::from([("alice".to_owned(), a_y.clone())]);
    // Every permutation of the three gives the same owner.
    for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
        let input: Vec<_> = order.iter().map(|&i| entries[i]).collect();
        assert_eq!(owners(input, None), expected, "order {order:?}");
    }
    // Namespace before name: b/a loses to a/z once a/y is gone.
    assert_eq!(
        owners([(&b_a, at(1_000), &s), (&a_z, at(1_000), &s)], None),
        BTreeMap::from([("alice".to_owned(), a_z.clone())])
    );
}

#[test]
fn owners_without_creation_time_sort_first() {
    let dated = id("a", "dated");
    let undated = id("z", "undated");
    let s = selection(&["alice"]);
    let expected = BTreeMap::from([("alice".to_owned(), undated.clone())]);
    assert_eq!(owners([(&dated, at(1), &s), (&undated, None, &s)], None), expected);
    assert_eq!(owners([(&undated, None, &s), (&dated, at(1), &s)], None), expected);
    // Two undated: namespace/name decides.
    let undated_b = id("b", "undated");
    assert_eq!(
        owners([(&undated, None, &s), (&undated_b, None, &s)], None),
        BTreeMap::from([("alice".to_owned(), undated_b.clone())])
    );
}

#[test]
fn owners_of_nothing_is_empty() {
    let a = id("a", "a");
    let empty = selection(&[]);
    assert_eq!(owners([(&a, at(1), &empty)], None), BTreeMap::new());
    assert_eq!(owners(std::iter::empty(), None), BTreeMap::new());
}

#[test]
fn owners_among_some_users_are_the_same_owners() {
    let young = id("a-team", "young");
    let old = id("z-team", "old");
    let (s_young, s_old) = (selection(&["alice", "bob"]), selection(&["bob", "carol"]));
    let entries = [(&young, at(2_000), &s_young), (&old, at(1_000), &s_old)];
    let all = owners(entries.iter().cloned(), None);
    let among = s_young.users.clone();
    let some = owners(entries.iter().cloned(), Some(&among));
    assert_eq!(some, all.into_iter().filter(|(u, _)| among.contains(u)).collect::<BTreeMap<_, _>>());
    assert_eq!(some.get("bob"), Some(&old), "the older enrollment still owns bob");
    assert_eq!(some.get("carol"), None, "only the users asked for");
}

#[test]
fn enrollment_id_displays_as_namespace_slash_name() {
    assert_eq!(other().to_string(), "infra/older");
}

#[test]
fn codes_debug_is_redacted() {
    let codes = Codes { code1: "123456".into(), code2: "654321".into() };
    assert_eq!(format!("{codes:?}"), "Codes(<redacted>)");
}

#[test]
fn codes_that_went_stale_while_the_operator_was_busy_are_not_the_persons_fault() {
    // A pair current two minutes ago, when the operator first saw the Secret's version.
    let codes = pair_ending(n() - 4);
    let alice = with_codes(seed_secret("alice"), codes);
    let mut world = World::enroll(&["alice"]).device(unassigned(&serial("alice"))).refused("alice", 2, None);
    world.received.insert(alice.name.clone(), NOW - SignedDuration::from_secs(125));
    let plan = world.secret(alice.clone()).run();
    let [Decision { steps, .. }] = plan.decisions.as_slice() else { panic!("{:?}", plan.decisions) };
    let [Step::RejectCodes { attempts, message, cause, .. }] = steps.as_slice() else { panic!("{steps:?}") };
    assert_eq!((*attempts, *cause), (2, RefusalCause::OperatorDelay), "not counted as a guess");
    assert!(message.contains("not your mistake") && message.contains("125 seconds"), "{message}");
    assert_eq!(plan.users[0].failed_attempts, 2);

    // Already old when they arrived: the person's timing, told as such.
    let mut world = World::enroll(&["alice"]).device(unassigned(&serial("alice"))).refused("alice", 2, None);
    world.received.insert(alice.name.clone(), NOW - SignedDuration::from_secs(5));
    let plan = world.secret(alice).run();
    let [Decision { steps, .. }] = plan.decisions.as_slice() else { panic!("{:?}", plan.decisions) };
    let [Step::RejectCodes { cause, message, .. }] = steps.as_slice() else { panic!("{steps:?}") };
    assert_eq!(*cause, RefusalCause::Timing);
    assert!(message.starts_with("the codes are"), "{message}");
}

#[test]
fn deletion_removes_only_unassigned_devices_nobody_else_holds_and_every_seed_secret() {
    let (alice, bob, carol) = (seed_secret("alice"), seed_secret("bob"), seed_secret("carol"));
    // alice's device is unassigned, bob's was enabled meanwhile, carol's is held by
    // another enrollment's seed Secret too.
    let unassigned = BTreeSet::from([alice.serial.clone(), carol.serial.clone()]);
    let held_elsewhere = BTreeSet::from([carol.serial.as_str()]);
    let decisions = release_on_deletion(&[alice.clone(), bob.clone(), carol.clone()], &unassigned, &held_elsewhere);
    let steps: Vec<Vec<Step>> = decisions.into_iter().map(|d| d.steps).collect();
    assert_eq!(
        steps,
        [
            vec![Step::DeleteDevice { serial: alice.serial.clone() }, Step::DeleteSecret { name: alice.name }],
            vec![Step::DeleteSecret { name: bob.name }],
            vec![Step::DeleteSecret { name: carol.name }],
        ]
    );
}

fn link_row(user: &str, sent: Timestamp, message: &str) -> UserRow {
    UserRow {
        link_sent_at: Some(sent),
        link_expires_at: Some(sent + link::DEFAULT_TTL),
        message: Some(message.into()),
        ..UserRow::new(user, UserState::Pending)
    }
}

const LINK_SENT: &str =
    "a one-time enrollment link was sent by e-mail: open it to set up MFA (it works once, until linkExpiresAt)";

fn send_link(user: &str, replaces_expired: bool) -> Decision {
    work(
        Some(user),
        vec![Step::SendLink {
            user: user.into(),
            channel: LinkChannel::Email,
            tags: BTreeMap::new(),
            replaces_expired,
        }],
        note(EventReason::LinkSent, &format!("one-time enrollment link sent for {user} (by e-mail)")),
    )
}

#[test]
fn by_link_a_user_without_mfa_gets_a_link_and_no_device_or_secret() {
    let plan = World::enroll(&["alice"]).by_link().run();
    assert_eq!(plan.decisions, [send_link("alice", false)]);
    assert_eq!(plan.users, [link_row("alice", NOW, LINK_SENT)]);
}

#[test]
fn by_link_a_live_link_waits_and_an_expired_one_is_sent_again() {
    let sent = NOW - SignedDuration::from_hours(1);
    let plan = World::enroll(&["alice"]).by_link().link("alice", sent, false).run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [link_row("alice", sent, LINK_SENT)]);

    let long_ago = NOW - link::DEFAULT_TTL - SignedDuration::from_secs(1);
    let plan = World::enroll(&["alice"]).by_link().link("alice", long_ago, false).run();
    assert_eq!(plan.decisions, [send_link("alice", true)]);
    assert_eq!(plan.users, [link_row("alice", NOW, LINK_SENT)]);
}

#[test]
fn by_link_a_used_link_waits_for_iam_and_is_revoked_once_the_user_is_compliant() {
    let plan = World::enroll(&["alice"]).by_link().link("alice", NOW, true).run();
    assert_eq!(plan.decisions, []);
    assert_eq!(plan.users, [link_row("alice", NOW, "enrolled through the link; waiting for IAM to list the device")]);
    // Compliant: the used link stays until it expires (a reload reads "used"), then goes.
    let plan = World::enroll(&["alice"]).by_link().link("alice", NOW, true).assigned("alice").run();
    assert_eq!(plan.users, [compliant("alice")]);
    assert_eq!(plan.decisions, []);
    let long_ago = NOW - link::DEFAULT_TTL;
    let plan = World::enroll(&["alice"]).by_link().link("alice", long_ago, true).assigned("alice").run();
    assert_eq!(
        plan.decisions,
        [work(None, vec![Step::RevokeLinks { users: BTreeSet::from(["alice".to_owned()]) }], None)]
    );
}

#[test]
fn links_of_users_no_longer_waiting_are_revoked_and_so_are_all_when_the_enrollment_leaves_link_delivery() {
    // bob is no longer selected; carol is another enrollment's.
    let world = World::enroll(&["alice", "carol"])
        .by_link()
        .owner("carol", other())
        .link("bob", NOW, false)
        .link("carol", NOW, false);
    let plan = world.run();
    let revoked = BTreeSet::from(["bob".to_owned(), "carol".to_owned()]);
    assert!(
        plan.decisions.contains(&work(None, vec![Step::RevokeLinks { users: revoked }], None)),
        "{:?}",
        plan.decisions
    );
    // Back to Secret delivery: every link goes, and devices and Secrets are made as before.
    let plan = World::enroll(&["alice"]).link("alice", NOW, false).run();
    assert!(plan.decisions.contains(&work(
        None,
        vec![Step::RevokeLinks { users: BTreeSet::from(["alice".to_owned()]) }],
        None
    )));
    assert!(plan.decisions.iter().any(|d| d.steps.iter().any(|s| matches!(s, Step::CreatePending { .. }))));
}

#[test]
fn by_link_a_seed_secret_left_from_secret_delivery_is_released_and_a_page_held_device_is_not_swept() {
    let alice = seed_secret("alice");
    let plan = World::enroll(&["alice", "bob"])
        .by_link()
        .device(unassigned(&alice.serial))
        .secret(alice.clone())
        .device(unassigned(&serial("bob")))
        .held(&serial("bob"))
        .run();
    let steps: Vec<&Step> = plan.decisions.iter().flat_map(|d| &d.steps).collect();
    assert!(steps.contains(&&Step::DeleteSecret { name: alice.name.clone() }), "{steps:?}");
    assert!(steps.contains(&&Step::DeleteDevice { serial: alice.serial.clone() }), "{steps:?}");
    assert!(!steps.contains(&&Step::DeleteDevice { serial: serial("bob") }), "a page session holds it: {steps:?}");
    // Once no page holds it, bob's unassigned device is an orphan like any other.
    let plan = World::enroll(&["bob"]).by_link().device(unassigned(&serial("bob"))).run();
    assert!(plan.decisions.iter().flat_map(|d| &d.steps).any(|s| *s == Step::DeleteDevice { serial: serial("bob") }));
}
