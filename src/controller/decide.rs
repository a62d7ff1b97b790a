//! Pure planning: from an enrollment's spec, the account inventory, its seed Secrets and
//! who owns which user, decide what to do and what each user's status will be once it
//! is done. No I/O and no clock: `now` comes in, so every rule is unit-tested exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;

use super::seed_secret::{SeedSecret, Untrusted, secret_name};
use super::selection::Selection;
use super::vocabulary::EventReason;
use crate::crd::{LinkChannel, MfaEnrollmentSpec, Mode, UserState};
use crate::inventory::{Inventory, MfaState, device_serial};
use crate::{link, totp};

/// Refused submissions after which a device is replaced (new device, new seed).
pub const MAX_FAILED_ATTEMPTS: u32 = 5;

/// An enrollment's identity: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnrollmentId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for EnrollmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which enrollment holds a pending device (from the seed Secrets of every watched
/// namespace): device serial -> holders.
pub type Claims = BTreeMap<String, Vec<EnrollmentId>>;

/// Two submitted codes. `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct Codes {
    pub code1: String,
    pub code2: String,
}

impl fmt::Debug for Codes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Codes(<redacted>)")
    }
}

/// One write the controller performs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create a virtual device for the user under the enrollment's device path, then at
    /// once its seed Secret.
    CreatePending {
        user: String,
        /// Creation time recorded on the seed Secret (whole seconds, as status shows it),
        /// so the planned `pendingSince` is exactly what later reconciles read back.
        at: Timestamp,
    },
    /// Delete an unassigned virtual device.
    DeleteDevice { serial: String },
    /// Delete a seed Secret of this enrollment.
    DeleteSecret { name: String },
    /// Enable the device with the two codes (exactly the six digits each that the local
    /// check accepted), then delete the seed Secret.
    Enable { user: String, serial: String, secret: String, codes: Codes, if_refused: Box<IfRefused> },
    /// Clear the code keys and record the refusal on the Secret.
    RejectCodes { secret: String, attempts: u32, message: String, cause: RefusalCause },
    /// Mint a one-time link for the user and send it (`delivery: Link`); the user's IAM
    /// tags carry the address.
    SendLink { user: String, channel: LinkChannel, tags: BTreeMap<String, String>, replaces_expired: bool },
    /// Revoke the links of these users (no longer selected, compliant, or the enrollment
    /// left `delivery: Link`).
    RevokeLinks { users: BTreeSet<String> },
}

/// What follows when AWS refuses codes the local check accepted: exactly what follows a
/// local refusal (the codes cleared with `message` on the Secret, the refusal counted, the
/// user's row and the Event below), decided here with everything else about the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfRefused {
    pub message: String,
    pub row: UserRow,
    pub note: EventNote,
}

/// Why codes were refused, for the refusal metric: guesses and AWS's refusals count
/// towards replacing the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalCause {
    /// The codes do not match (or are malformed): counts as a guess.
    Guess,
    /// Right codes at the wrong time (old when written, or from a clock running ahead).
    Timing,
    /// The codes were current when the operator received them and went stale while it
    /// was busy: not the person's doing.
    OperatorDelay,
    /// AWS refused codes the local check accepted: counts like a guess.
    Aws,
}

impl RefusalCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guess => "guess",
            Self::Timing => "timing",
            Self::OperatorDelay => "operator_delay",
            Self::Aws => "aws",
        }
    }
}

/// An Event to publish once an action (or a user's whole sequence) succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub reason: EventReason,
    pub message: String,
}

/// A user's planned status (the state once the user's steps succeed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub state: UserState,
    pub serial: Option<String>,
    pub secret: Option<String>,
    pub pending_since: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub message: Option<String>,
    /// Refused submissions for the pending device (the operator's own count).
    pub failed_attempts: u32,
    /// When the user's one-time link was sent, and when it stops working (`delivery:
    /// Link`).
    pub link_sent_at: Option<Timestamp>,
    pub link_expires_at: Option<Timestamp>,
}

impl UserRow {
    pub fn new(name: &str, state: UserState) -> Self {
        Self {
            name: name.to_owned(),
            state,
            serial: None,
            secret: None,
            pending_since: None,
            expires_at: None,
            message: None,
            failed_attempts: 0,
            link_sent_at: None,
            link_expires_at: None,
        }
    }

    fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// A sequence of steps that belong together (for one user, or one cleanup), run in
/// order and stopped at the first failure. The note is published when all succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The user whose status depends on this work, if any.
    pub user: Option<String>,
    pub steps: Vec<Step>,
    pub note: Option<EventNote>,
}

/// Everything one reconcile of one enrollment decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub decisions: Vec<Decision>,
    /// Every selected user's planned status, plus names that do not exist.
    pub users: Vec<UserRow>,
}

/// What the operator recorded about a user's refused submissions in the status it last
/// wrote (never in the Secret, which the person submitting codes can edit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// `pendingSince` of the device the count belongs to: a new device starts at zero.
    pub pending_since: Option<Timestamp>,
    pub failed_attempts: u32,
    /// The last refusal's message, shown until the next submission.
    pub last: Option<String>,
}

/// How a status message about refused codes starts (also how [`Refusals::last`] is found).
pub const REFUSAL_PREFIX: &str = "codes refused";

/// The inputs of [`plan`].
pub struct DecideInput<'a> {
    pub id: &'a EnrollmentId,
    pub spec: &'a MfaEnrollmentSpec,
    /// Where this enrollment's devices live (its binding's `device.path`).
    pub device_path: &'a str,
    pub now: Timestamp,
    pub inventory: &'a Inventory,
    pub selection: &'a Selection,
    /// Owner of each user that some Enroll-mode enrollment of the account selects.
    pub owners: &'a BTreeMap<String, EnrollmentId>,
    /// This enrollment's seed Secrets whose integrity tag verified.
    pub secrets: &'a [SeedSecret],
    /// Secrets with this enrollment's labels that are not what the operator wrote.
    pub untrusted: &'a [Untrusted],
    /// Each user's refused submissions, from the status last written.
    pub refusals: &'a BTreeMap<String, Refusals>,
    /// When the operator first saw the current version of each seed Secret (by name).
    pub received: &'a BTreeMap<String, Timestamp>,
    pub claims: &'a Claims,
    /// This enrollment's one-time link records, by user (`delivery: Link`).
    pub links: &'a BTreeMap<String, link::Record>,
    /// Pending devices that open enrollment-page sessions hold.
    pub held: &'a BTreeSet<String>,
}

/// Decides the work and the users' status for one enrollment. Selected users must be
/// resolved in the inventory first (no [`MfaState::Unknown`]); an unresolved user is
/// treated as having no device but gets no action.
pub fn decide(input: &DecideInput<'_>) -> Plan {
    let mut out = Plan::default();
    let mut handled_secrets = BTreeSet::new();
    let mut handled_serials = BTreeSet::new();
    // Report mode writes nothing but the deletion of seeds whose device is enabled: no
    // device or other Secret is created, changed or removed (a Report enrollment that
    // used to enroll keeps its pending devices and Secrets until it is deleted or
    // enrolls again).
    let enroll = input.spec.mode == Mode::Enroll;

    let links = input.spec.links();
    for user in &input.selection.users {
        let name = secret_name(&input.id.name, user);
        if links {
            // No seed Secret in Link mode: any left from Secret mode is released below.
            let (row, decisions) = decide_link_user(input, user);
            out.users.push(row);
            out.decisions.extend(decisions);
            continue;
        }
        handled_secrets.insert(name.clone());
        let secret = input.secrets.iter().find(|s| &s.user == user && s.name == name);
        if let Some(secret) = secret {
            handled_serials.insert(secret.serial.clone());
        }
        // The user's own device under our path is this enrollment's business only while
        // it enrolls the user; otherwise the orphan sweep below judges it.
        let enrolls_user = enroll
            && !matches!(input.inventory.mfa_state(user), MfaState::Active(_))
            && input.owners.get(user).is_none_or(|owner| owner == input.id);
        if enrolls_user && let Some(account) = input.inventory.account_id() {
            handled_serials.insert(device_serial(account, input.device_path, user));
        }
        let tampered = input.untrusted.iter().find(|u| u.name == name);
        let (status, work) = decide_user(input, user, secret, tampered);
        out.users.push(status);
        out.decisions.extend(work);
    }
    for name in &input.selection.not_found {
        out.users
            .push(UserRow::new(name, UserState::NotFound).message("no IAM user with this name exists in the account"));
    }
    out.decisions.extend(revoke_links(input, &out.users));
    if !enroll {
        return out;
    }
    out.decisions.extend(leftovers(input, &handled_secrets, &mut handled_serials));
    out.decisions.extend(orphans(input, &handled_serials));
    out
}

/// Seed Secrets of users this enrollment no longer selects (or no longer owns): removed
/// with their unassigned devices. Look-alikes that stand where no selected user's Secret
/// would: never obeyed, removed (their devices, if any, are orphans for [`orphans`]).
fn leftovers(
    input: &DecideInput<'_>,
    handled_secrets: &BTreeSet<String>,
    handled_serials: &mut BTreeSet<String>,
) -> Vec<Decision> {
    let mut decisions = Vec::new();
    for secret in input.secrets.iter().filter(|s| !handled_secrets.contains(&s.name)) {
        handled_serials.insert(secret.serial.clone());
        decisions.push(Decision {
            user: None,
            steps: release(input, secret),
            note: Some(EventNote {
                reason: EventReason::PendingDeviceRemoved,
                message: format!("removed the pending device of {} (no longer selected)", secret.user),
            }),
        });
    }
    decisions.extend(input.untrusted.iter().filter(|u| !handled_secrets.contains(&u.name)).map(remove_lookalike));
    decisions
}

/// Removes a Secret that carries this enrollment's labels but is not what the operator
/// wrote (never obeyed), and says so.
fn remove_lookalike(untrusted: &Untrusted) -> Decision {
    Decision {
        user: None,
        steps: vec![Step::DeleteSecret { name: untrusted.name.clone() }],
        note: Some(EventNote {
            reason: EventReason::SeedSecretTampered,
            message: format!("deleted Secret {}: it {}", untrusted.name, untrusted.why),
        }),
    }
}

/// Unassigned devices under our path that no other enrollment's seed Secret claims (our
/// own Secrets were read fresh): the seed is lost, nobody can enable them. A device
/// another reconcile is creating right now is reserved (its decision holds the device),
/// so this sweep never deletes it; an owner elsewhere whose device went here simply
/// creates a fresh one on its next reconcile.
fn orphans(input: &DecideInput<'_>, handled_serials: &BTreeSet<String>) -> Vec<Decision> {
    input
        .inventory
        .pending_under(input.device_path)
        .filter(|device| {
            !handled_serials.contains(&device.serial)
                && !held_by_others(input, &device.serial)
                && !input.held.contains(&device.serial)
        })
        .map(|device| Decision {
            user: None,
            steps: vec![Step::DeleteDevice { serial: device.serial.clone() }],
            note: Some(EventNote {
                reason: EventReason::OrphanDeviceDeleted,
                message: format!("deleted unassigned device {} that no seed Secret claims", device.serial),
            }),
        })
        .collect()
}

/// A selected user of a `delivery: Link` enrollment: nothing to do once they have MFA or
/// another enrollment owns them; a link on its way while theirs is live; a new link when
/// they have none or it expired. The device is the page's business (created when the
/// person opens the link), so no device or Secret is decided here.
fn decide_link_user(input: &DecideInput<'_>, user: &str) -> (UserRow, Vec<Decision>) {
    match input.inventory.mfa_state(user) {
        MfaState::Active(_) => return (UserRow::new(user, UserState::Compliant), Vec::new()),
        MfaState::Unknown => {
            return (UserRow::new(user, UserState::Missing).message("MFA devices not listed yet"), Vec::new());
        }
        _ => {}
    }
    if let Some(owner) = input.owners.get(user).filter(|o| *o != input.id) {
        let message = format!("enrollment is handled by {owner}, the oldest enrollment selecting this user");
        return (UserRow::new(user, UserState::Pending).message(message), Vec::new());
    }
    let channel = input.spec.link.as_ref().and_then(|l| l.channel).unwrap_or_default();
    let row = |sent: Timestamp, expires: Timestamp, message: String| UserRow {
        link_sent_at: Some(sent),
        link_expires_at: Some(expires),
        ..UserRow::new(user, UserState::Pending).message(message)
    };
    match input.links.get(user) {
        Some(record) if record.used_at.is_some() => {
            let message = "enrolled through the link; waiting for IAM to list the device".to_owned();
            (row(record.minted_at, record.expires_at, message), Vec::new())
        }
        Some(record) if record.expires_at > input.now => {
            (row(record.minted_at, record.expires_at, link_message(channel)), Vec::new())
        }
        previous => {
            // Minted at this reconcile's clock (whole seconds, as status shows it), so
            // the prediction is exactly what the record will say.
            let at = Timestamp::from_second(input.now.as_second()).unwrap_or(input.now);
            let expires = at.checked_add(input.spec.link_ttl().clamp(jiff::SignedDuration::ZERO, link::MAX_TTL));
            let tags = input.inventory.users.get(user).map(|u| u.tags.clone()).unwrap_or_default();
            let decision = Decision {
                user: Some(user.to_owned()),
                steps: vec![Step::SendLink {
                    user: user.to_owned(),
                    channel,
                    tags,
                    replaces_expired: previous.is_some(),
                }],
                note: Some(EventNote {
                    reason: EventReason::LinkSent,
                    message: format!("one-time enrollment link sent for {user} ({})", channel_name(channel)),
                }),
            };
            (row(at, expires.unwrap_or(at), link_message(channel)), vec![decision])
        }
    }
}

/// What a user whose link is out reads in status.
fn link_message(channel: LinkChannel) -> String {
    format!(
        "a one-time enrollment link was sent {}: open it to set up MFA (it works once, until linkExpiresAt)",
        channel_name(channel)
    )
}

fn channel_name(channel: LinkChannel) -> &'static str {
    match channel {
        LinkChannel::Email => "by e-mail",
        LinkChannel::Webhook => "to the chat webhook",
        LinkChannel::Manual => "for an administrator to hand over (kubectl mfa link)",
    }
}

/// Revokes every link this enrollment keeps for a user who does not wait for one now: no
/// longer selected or owned, compliant, or the enrollment left `delivery: Link`. A used
/// link stays until it expires, so the person who reloads the page reads "used", not
/// "does not work" (it opens nothing: it is used).
fn revoke_links(input: &DecideInput<'_>, rows: &[UserRow]) -> Option<Decision> {
    let waiting: BTreeSet<&str> = rows
        .iter()
        .filter(|r| input.spec.links() && r.link_sent_at.is_some() && r.state == UserState::Pending)
        .map(|r| r.name.as_str())
        .collect();
    let used = |record: &link::Record| record.used_at.is_some() && record.expires_at > input.now;
    let users: BTreeSet<String> = input
        .links
        .iter()
        .filter(|(user, record)| {
            let kept = waiting.contains(user.as_str()) || (input.spec.links() && used(record));
            !kept
        })
        .map(|(user, _)| user.clone())
        .collect();
    (!users.is_empty()).then(|| Decision { user: None, steps: vec![Step::RevokeLinks { users }], note: None })
}

/// Whether another enrollment's (verified) seed Secret holds the device `serial`.
fn held_by_others(input: &DecideInput<'_>, serial: &str) -> bool {
    input.claims.get(serial).is_some_and(|holders| holders.iter().any(|h| h != input.id))
}

/// `DeleteDevice` for `serial` when it is an unassigned device nobody else holds.
fn delete_if_unheld(input: &DecideInput<'_>, serial: &str) -> Option<Step> {
    let unassigned = input.inventory.virtual_device(serial).is_some_and(|d| d.user.is_none());
    (unassigned && !held_by_others(input, serial)).then(|| Step::DeleteDevice { serial: serial.to_owned() })
}

/// Actions that remove one of this enrollment's seed Secrets, and its device when the
/// device is unassigned and nobody else holds it. The serial is the one the operator
/// recorded (the tag proves it), so a device under a former device path is found too.
fn release(input: &DecideInput<'_>, secret: &SeedSecret) -> Vec<Step> {
    let mut steps: Vec<Step> = delete_if_unheld(input, &secret.serial).into_iter().collect();
    steps.push(Step::DeleteSecret { name: secret.name.clone() });
    steps
}

fn decide_user(
    input: &DecideInput<'_>,
    user: &str,
    secret: Option<&SeedSecret>,
    tampered: Option<&Untrusted>,
) -> (UserRow, Vec<Decision>) {
    let mfa = input.inventory.mfa_state(user);
    // A tampered Secret where this user's would stand is never obeyed; below, it is
    // replaced, or simply removed where this enrollment creates nothing for the user.
    let remove_tampered = || tampered.map(remove_lookalike);
    if let MfaState::Active(_) = mfa {
        // Compliant. A leftover Secret (crash after enabling, or the person enabled a
        // device elsewhere) holds a live or useless seed: it goes in every mode; its
        // unassigned device only where this enrollment writes.
        let steps = match secret {
            Some(s) if input.spec.mode == Mode::Enroll => release(input, s),
            Some(s) => vec![Step::DeleteSecret { name: s.name.clone() }],
            None => Vec::new(),
        };
        let work = (!steps.is_empty()).then_some(Decision { user: None, steps, note: None });
        return (UserRow::new(user, UserState::Compliant), work.into_iter().chain(remove_tampered()).collect());
    }
    if input.spec.mode == Mode::Report {
        // A pending device left from enrolling keeps its refusal count: switching modes
        // must not reset the guess limit.
        let mut missing = UserRow::new(user, UserState::Missing).message("no active MFA device");
        if let Some(s) = secret {
            missing.pending_since = Some(s.created);
            missing.failed_attempts = refusals_for(input, user, s).failed_attempts;
        }
        return (missing, Vec::new());
    }
    if mfa == MfaState::Unknown {
        return (UserRow::new(user, UserState::Missing).message("MFA devices not listed yet"), Vec::new());
    }
    if let Some(owner) = input.owners.get(user).filter(|o| *o != input.id) {
        // Another (older) enrollment owns this user's enrollment: never a second device.
        let work = secret.map(|s| Decision { user: None, steps: release(input, s), note: None });
        return (
            UserRow::new(user, UserState::Pending)
                .message(format!("enrollment is handled by {owner}, the oldest enrollment selecting this user")),
            work.into_iter().chain(remove_tampered()).collect(),
        );
    }
    let Some(account) = input.inventory.account_id() else {
        return (UserRow::new(user, UserState::Missing), Vec::new());
    };
    // The only device the operator ever enables for this user: derived, never read.
    let serial = device_serial(account, input.device_path, user);
    // A verified Secret older than the device the operator last recorded for this user
    // is a replayed copy of an earlier one: tampering like any other.
    let replayed = secret
        .filter(|s| input.refusals.get(user).and_then(|r| r.pending_since).is_some_and(|recorded| s.created < recorded))
        .map(|s| Untrusted { name: s.name.clone(), why: "is an older copy than the one the operator last recorded" });
    if let Some(tampered) = tampered.or(replayed.as_ref()) {
        let mut before = vec![Step::DeleteSecret { name: tampered.name.clone() }];
        before.extend(delete_if_unheld(input, &serial));
        let why = format!("{tampered}; it was replaced");
        let (mut status, work) = create(input, user, &serial, before, Some((EventReason::SeedSecretTampered, &why)));
        status.message = Some(format!("{why}: scan the new QR code in Secret {}", tampered.name));
        return (status, work);
    }
    match secret {
        Some(secret) => decide_pending(input, user, &serial, secret),
        None => decide_without_secret(input, user, &serial),
    }
}

/// No seed Secret. A device of ours without one has lost its seed (crash between the two
/// writes, or the Secret was deleted): replace it, unless another enrollment holds it.
fn decide_without_secret(input: &DecideInput<'_>, user: &str, serial: &str) -> (UserRow, Vec<Decision>) {
    if input.inventory.virtual_device(serial).is_none_or(|d| d.user.is_some()) {
        return create(input, user, serial, Vec::new(), None);
    }
    let others: Vec<String> =
        input.claims.get(serial).into_iter().flatten().filter(|h| *h != input.id).map(ToString::to_string).collect();
    if !others.is_empty() {
        return (
            UserRow::new(user, UserState::Pending)
                .message(format!("pending device is held by {}", bounded_list(&others))),
            Vec::new(),
        );
    }
    let delete = vec![Step::DeleteDevice { serial: serial.to_owned() }];
    create(input, user, serial, delete, Some((EventReason::SeedRotated, "its seed Secret was missing")))
}

/// A pending device with its (verified) seed Secret: wait, check submitted codes, or
/// rotate the device.
fn decide_pending(input: &DecideInput<'_>, user: &str, serial: &str, secret: &SeedSecret) -> (UserRow, Vec<Decision>) {
    let rotate = |why: &str| {
        let mut before: Vec<Step> = delete_if_unheld(input, &secret.serial).into_iter().collect();
        before.push(Step::DeleteSecret { name: secret.name.clone() });
        if secret.serial != serial {
            before.extend(delete_if_unheld(input, serial));
        }
        create(input, user, serial, before, Some((EventReason::SeedRotated, why)))
    };
    if secret.serial != serial {
        return rotate("the device path changed");
    }
    if input.inventory.virtual_device(serial).is_none_or(|d| d.user.is_some()) {
        // Deleted out of band (AWS deletes every unassigned virtual device of the account
        // when anyone adds one in the console) or assigned elsewhere: the person's seed is
        // void. Tell them plainly; it is not their fault.
        let (mut status, work) = rotate("its pending device no longer exists");
        status.message = Some(format!(
            "the pending device was removed from AWS (for example by the console's clean-up of unassigned \
             devices), so its codes cannot work: scan the new QR code in Secret {} and write two consecutive \
             codes as code1 and code2",
            secret.name
        ));
        return (status, work);
    }
    let refusals = refusals_for(input, user, secret);
    if refusals.failed_attempts >= MAX_FAILED_ATTEMPTS {
        return rotate(&format!("{} code submissions were refused", refusals.failed_attempts));
    }
    let expires_at = secret.created.checked_add(ttl(input.spec)).ok();
    let pending = UserRow {
        serial: Some(secret.serial.clone()),
        secret: Some(secret.name.clone()),
        pending_since: Some(secret.created),
        expires_at,
        failed_attempts: refusals.failed_attempts,
        ..UserRow::new(user, UserState::Pending)
    };
    let expired = expires_at.is_some_and(|t| t <= input.now);
    if let Some((code1, code2)) = &secret.codes {
        // Past the TTL only codes that enable still count; anything else rotates, so
        // codes left in the Secret never keep a device alive.
        let (status, work) = decide_submission(input, user, secret, pending, (code1, code2), &rotate);
        let enables = work.iter().flat_map(|w| &w.steps).any(|a| matches!(a, Step::Enable { .. }));
        return if expired && !enables { rotate("it was not enabled within pendingTTL") } else { (status, work) };
    }
    if expired {
        return rotate("it was not enabled within pendingTTL");
    }
    let message = if secret.partial_codes {
        format!("only one code in Secret {}: write both code1 and code2", secret.name)
    } else if let Some(last) = refusals.last {
        last
    } else {
        format!("scan the QR code in Secret {} and write two consecutive codes as code1 and code2", secret.name)
    };
    (UserRow { message: Some(message), ..pending }, Vec::new())
}

/// Refused submissions count against the device they were made for only (same
/// pendingSince).
fn refusals_for(input: &DecideInput<'_>, user: &str, secret: &SeedSecret) -> Refusals {
    input.refusals.get(user).filter(|r| r.pending_since == Some(secret.created)).cloned().unwrap_or_default()
}

/// Two codes were written: enable with exactly the digits checked, or refuse and count.
fn decide_submission(
    input: &DecideInput<'_>,
    user: &str,
    secret: &SeedSecret,
    pending: UserRow,
    (code1, code2): (&str, &str),
    rotate: &dyn Fn(&str) -> (UserRow, Vec<Decision>),
) -> (UserRow, Vec<Decision>) {
    let Ok(seed) = totp::decode_seed(secret.seed.expose()) else {
        return rotate("its seed could not be read");
    };
    let verdict = totp::verify_pair(&seed, code1, code2, input.now.as_second())
        .map(|_| (totp::normalize_code(code1), totp::normalize_code(code2)));
    match verdict {
        Ok((Some(code1), Some(code2))) => {
            let attempts = pending.failed_attempts + 1;
            let message = format!(
                "AWS did not accept them: {REFUSED_BY_AWS} (refused submission {attempts} of {MAX_FAILED_ATTEMPTS})"
            );
            let (row, note) = refusal(pending.clone(), user, attempts, &message);
            let if_refused = Box::new(IfRefused { message, row, note });
            let enable = Step::Enable {
                user: user.to_owned(),
                serial: secret.serial.clone(),
                secret: secret.name.clone(),
                codes: Codes { code1: code1.to_owned(), code2: code2.to_owned() },
                if_refused,
            };
            (
                // The prediction; an AWS refusal shows `if_refused.row` instead.
                UserRow { failed_attempts: pending.failed_attempts, ..UserRow::new(user, UserState::Compliant) },
                vec![Decision {
                    user: Some(user.to_owned()),
                    steps: vec![enable],
                    note: Some(EventNote {
                        reason: EventReason::MfaEnabled,
                        message: format!("MFA enabled for {user}"),
                    }),
                }],
            )
        }
        // verify_pair accepts only codes that normalise; kept total for the compiler.
        Ok(_) => rotate("its codes could not be read"),
        Err(rejection) => refuse(input, user, secret, pending, (code1, code2), &seed, &rejection)
            .unwrap_or_else(|attempts| rotate(&format!("{attempts} code submissions were refused"))),
    }
}

/// Codes the local check refused: the refusal (a guess counts, late or early codes do
/// not; codes that went stale while the operator was busy are never blamed on the
/// person), or `Err(attempts)` when the guess limit is reached and the device rotates.
fn refuse(
    input: &DecideInput<'_>,
    user: &str,
    secret: &SeedSecret,
    pending: UserRow,
    (code1, code2): (&str, &str),
    seed: &[u8],
    rejection: &totp::CodeRejection,
) -> Result<(UserRow, Vec<Decision>), u32> {
    let timing = matches!(rejection, totp::CodeRejection::Stale { .. } | totp::CodeRejection::ClockAhead { .. });
    let received = input.received.get(&secret.name).copied();
    let delayed = received.filter(|at| {
        matches!(rejection, totp::CodeRejection::Stale { .. })
            && totp::verify_pair(seed, code1, code2, at.as_second()).is_ok()
    });
    let attempts = pending.failed_attempts + u32::from(!timing);
    if attempts >= MAX_FAILED_ATTEMPTS {
        return Err(attempts);
    }
    let (message, cause) = if let Some(at) = delayed {
        let waited = input.now.duration_since(at).as_secs().max(0);
        (
            format!(
                "the codes were current when they arrived, but the operator took {waited} seconds to process them \
                 and they are now too old for AWS; this was not your mistake: enter two new consecutive codes"
            ),
            RefusalCause::OperatorDelay,
        )
    } else if timing {
        (rejection.to_string(), RefusalCause::Timing)
    } else {
        (format!("{rejection} (refused submission {attempts} of {MAX_FAILED_ATTEMPTS})"), RefusalCause::Guess)
    };
    let (row, note) = refusal(pending, user, attempts, &message);
    let step = Step::RejectCodes { secret: secret.name.clone(), attempts, message, cause };
    Ok((row, vec![Decision { user: Some(user.to_owned()), steps: vec![step], note: Some(note) }]))
}

/// What people read when AWS refuses codes the local check accepted.
pub const REFUSED_BY_AWS: &str =
    "wait for a new code, then submit two fresh consecutive codes (AWS may consider these too old)";

/// A user's row and the Event once their codes were refused (by the local check or by
/// AWS): still Pending, with the reason and the count.
fn refusal(mut pending: UserRow, user: &str, attempts: u32, message: &str) -> (UserRow, EventNote) {
    pending.message = Some(format!("{REFUSAL_PREFIX}: {message}"));
    pending.failed_attempts = attempts;
    let note =
        EventNote { reason: EventReason::CodesRejected, message: format!("codes for {user} refused: {message}") };
    (pending, note)
}

/// Creates a new pending device (after `before`), planning the user as Pending.
fn create(
    input: &DecideInput<'_>,
    user: &str,
    serial: &str,
    mut before: Vec<Step>,
    rotated: Option<(EventReason, &str)>,
) -> (UserRow, Vec<Decision>) {
    let at = Timestamp::from_second(input.now.as_second()).unwrap_or(input.now);
    before.push(Step::CreatePending { user: user.to_owned(), at });
    let note = match rotated {
        Some((reason, why)) => EventNote { reason, message: format!("new pending device for {user}: {why}") },
        None => EventNote { reason: EventReason::DeviceCreated, message: format!("pending device created for {user}") },
    };
    let name = secret_name(&input.id.name, user);
    let status = UserRow {
        serial: Some(serial.to_owned()),
        pending_since: Some(at),
        expires_at: at.checked_add(ttl(input.spec)).ok(),
        message: Some(format!("scan the QR code in Secret {name} and write two consecutive codes as code1 and code2")),
        secret: Some(name),
        ..UserRow::new(user, UserState::Pending)
    };
    (status, vec![Decision { user: Some(user.to_owned()), steps: before, note: Some(note) }])
}

/// At most three names, then how many more: a status message has a bounded length.
fn bounded_list(names: &[String]) -> String {
    match names.len() {
        0..=3 => names.join(", "),
        n => format!("{} and {} more", names[..3].join(", "), n - 3),
    }
}

fn ttl(spec: &MfaEnrollmentSpec) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(std::time::Duration::from(spec.pending_ttl)).unwrap_or(jiff::SignedDuration::MAX)
}

/// What deleting an enrollment removes: per seed Secret, its device when the device is
/// `unassigned` (from a fresh listing) and not held by another enrollment, then the
/// Secret. Enabled devices, and devices another enrollment holds, stay.
pub fn release_on_deletion(
    secrets: &[SeedSecret],
    unassigned: &BTreeSet<String>,
    held_elsewhere: &BTreeSet<&str>,
) -> Vec<Decision> {
    secrets
        .iter()
        .map(|secret| {
            let serial = secret.serial.as_str();
            let delete = unassigned.contains(serial) && !held_elsewhere.contains(serial);
            let mut steps: Vec<Step> =
                delete.then(|| Step::DeleteDevice { serial: serial.to_owned() }).into_iter().collect();
            steps.push(Step::DeleteSecret { name: secret.name.clone() });
            Decision { user: None, steps, note: None }
        })
        .collect()
}

/// The owner of every user selected by an Enroll-mode enrollment of one account, or only
/// of the users in `among`: the oldest enrollment (creation time, then namespace/name)
/// wins, so the answer never flaps and no user ever gets two pending devices.
///
/// A reconcile needs the owners of its own users only (`among`: its selection). It holds
/// the map until it ends, and after each refresh every enrollment of the account
/// reconciles at once: the owners of all the account's users, in each of them, were
/// the largest part of the operator's peak memory (8.7 of 29.5 MB with 5,000 users in
/// 10 enrollments).
pub fn owners<'a>(
    selections: impl IntoIterator<Item = (&'a EnrollmentId, Option<Timestamp>, &'a Selection)>,
    among: Option<&BTreeSet<String>>,
) -> BTreeMap<String, EnrollmentId> {
    let mut ranked: Vec<_> = selections.into_iter().collect();
    ranked.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
    let mut owners = BTreeMap::new();
    for (id, _, selection) in ranked {
        for user in selection.users.iter().filter(|u| among.is_none_or(|among| among.contains(*u))) {
            owners.entry(user.clone()).or_insert_with(|| id.clone());
        }
    }
    owners
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
