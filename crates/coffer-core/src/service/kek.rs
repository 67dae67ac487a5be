//! The instance operator's KEK operations: status and starting a rotation. The rewrap job
//! itself is in `rotation.rs`.
//!
//! Who may do what: only the instance operator (`Principal::require_operator`); every other
//! token is refused and the refusal audited in its own account. The start of a rotation and the
//! retirement of each old version are audited in the operator's account; entries hold version
//! numbers and public KEK ids only.

use std::sync::Arc;

use coffer_storage::{AuditEntry, Storage};

use super::Coffer;
use super::audit::{Actor, Details, Event, Target, build_entry};
use crate::kek_call::on_blocking_pool;
use crate::rotation::{
    KekState, KekVersion, KekVersions, OnRetired, RewrapSettings, Rotation, RotationStatus,
    find_operator_account,
};
use crate::{AuditAction, AuditOutcome};
use crate::{CoreError, DekPolicy, Limits, Principal};

/// One version with the keys it wraps now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekVersionUsage {
    pub version: KekVersion,
    pub deks: u64,
    pub instance_keys: u64,
}

/// What `Coffer::kek_status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekStatusReport {
    pub active: KekVersion,
    /// Versions not retired, oldest first.
    pub versions: Vec<KekVersionUsage>,
    /// Present while a version is retiring.
    pub rotation: Option<RotationReport>,
    /// The DEK lifecycle job's progress, when it runs.
    pub reseal: Option<crate::ResealStatus>,
}

/// The ages of the stored DEKs, beside how often a new one is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DekAges {
    pub count: u64,
    /// The oldest DEK's creation (values under it are re-sealed onto newer ones by the DEK
    /// lifecycle job), and the newest's.
    pub oldest: Option<coffer_types::Timestamp>,
    pub newest: Option<coffer_types::Timestamp>,
    /// An account's sealing DEK is replaced once it is this old (or has sealed its budget).
    pub max_age: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub from: KekVersion,
    pub status: RotationStatus,
    /// Keys still wrapped by retiring versions.
    pub remaining: u64,
}

impl Coffer {
    /// The control plane over a KEK with versions: like [`Coffer::open`], and resumes a rotation
    /// that had not finished (a version still retiring).
    pub async fn open_rotating(
        storage: Arc<dyn Storage>,
        kek: Arc<dyn KekVersions>,
        limits: Limits,
        dek_policy: DekPolicy,
        rewrap: RewrapSettings,
    ) -> Result<Coffer, CoreError> {
        let mut coffer = Coffer::open(storage.clone(), kek.clone(), limits, dek_policy).await?;
        let rotation = Arc::new(Rotation::new(kek, storage, rewrap));
        if !rotation.retiring().is_empty() {
            tracing::info!("a KEK rotation had not finished: resuming it");
            rotation.spawn(coffer.on_retired());
        }
        coffer.rotation = Some(rotation);
        Ok(coffer)
    }

    fn kek_rotation(&self) -> Result<&Arc<Rotation>, CoreError> {
        self.rotation
            .as_ref()
            .ok_or(CoreError::KekRotationUnsupported(
                "this server's KEK has no versions (a control plane opened without rotation)",
            ))
    }

    /// The KEK's versions, the keys each wraps, and the progress of a rotation (instance
    /// operator only).
    pub async fn kek_status(&self, who: &Principal) -> Result<KekStatusReport, CoreError> {
        self.check_operator(who, None, AuditAction::KekStatus, Target::kek())
            .await?;
        let rotation = self.kek_rotation()?;
        self.kek_report(rotation).await
    }

    async fn kek_report(&self, rotation: &Rotation) -> Result<KekStatusReport, CoreError> {
        let usage = self.storage.kek_usage().await?;
        let all = rotation.kek.versions();
        let active = all
            .iter()
            .find(|v| v.state == KekState::Active)
            .cloned()
            .ok_or_else(|| CoreError::Internal("the KEK has no active version".into()))?;
        let versions: Vec<KekVersionUsage> = all
            .into_iter()
            .filter(|v| v.state != KekState::Retired)
            .map(|version| {
                let used = usage.iter().find(|u| u.kek_id == version.kek_id.0);
                KekVersionUsage {
                    deks: used.map_or(0, |u| u.deks),
                    instance_keys: used.map_or(0, |u| u.instance_keys),
                    version,
                }
            })
            .collect();
        let retiring: Vec<&KekVersionUsage> = versions
            .iter()
            .filter(|v| v.version.state == KekState::Retiring)
            .collect();
        let rotation = retiring.first().map(|from| RotationReport {
            from: from.version.clone(),
            status: rotation.status(),
            remaining: retiring.iter().map(|v| v.deks + v.instance_keys).sum(),
        });
        Ok(KekStatusReport {
            active,
            versions,
            rotation,
            reseal: self.reseal_status().await?,
        })
    }

    /// How old the stored DEKs are (instance operator only): read from every DEK row, so asked
    /// for by a page that shows it, not by each status poll.
    pub async fn dek_ages(&self, who: &Principal) -> Result<DekAges, CoreError> {
        self.check_operator(who, None, AuditAction::KekStatus, Target::kek())
            .await?;
        let deks = self.storage.list_deks().await?;
        let created = deks.iter().map(|d| d.key.created);
        Ok(DekAges {
            count: deks.len() as u64,
            oldest: created.clone().min(),
            newest: created.max(),
            max_age: self.keys.dek_policy().max_age,
        })
    }

    /// Starts a rotation (instance operator only): a new KEK version becomes active at once,
    /// and the keys the previous one wraps are rewrapped in the background. Returns the new
    /// version and the one it replaces. `KekRotationRunning` while an earlier rotation still
    /// has keys to rewrap.
    pub async fn start_kek_rotation(
        &self,
        who: &Principal,
    ) -> Result<(KekVersion, KekVersion), CoreError> {
        self.check_operator(who, None, AuditAction::KekRotate, Target::kek())
            .await?;
        if self.database_is_shared() {
            return Err(CoreError::KekRotationUnsupported(
                super::shared::ROTATION_ON_SHARED_DATABASE,
            ));
        }
        let rotation = self.kek_rotation()?;
        let _starting = rotation.starting.lock().await;
        if let Some(retiring) = rotation.retiring().first() {
            let status = rotation.status();
            return Err(CoreError::KekRotationRunning(match status.error {
                Some(e) => format!(
                    "the rotation away from KEK version {} stopped: {e}",
                    retiring.version
                ),
                None => format!(
                    "a KEK rotation is running: version {} still wraps keys; wait for it to \
                     finish (`coffer kek status`)",
                    retiring.version
                ),
            }));
        }
        let previous = rotation
            .kek
            .versions()
            .into_iter()
            .find(|v| v.state == KekState::Active)
            .ok_or_else(|| CoreError::Internal("the KEK has no active version".into()))?;
        let kek = Arc::clone(&rotation.kek);
        let new = on_blocking_pool(move || kek.add_version()).await?;
        // From here on, keys are wrapped by the new version; the keyring drops sealing DEKs
        // wrapped by another.
        tracing::info!(version = new.version, kek = %new.kek_id, "new KEK version active; rewrapping keys");
        let entry = self.change_entry(
            who,
            who.account_id,
            AuditAction::KekRotate,
            Target::kek(),
            Details {
                kek_version: Some(new.version),
                kek_id: Some(new.kek_id.0.clone()),
                ..Details::default()
            },
        )?;
        if let Err(e) = self.storage.append_audit(&[entry]).await {
            // The version exists and is in use: refusing now would not undo it.
            tracing::error!(error = %e, "the start of a KEK rotation could not be audited");
        }
        rotation.spawn(self.on_retired());
        Ok((new, previous))
    }

    /// Audits the retirement of a version in the operator's account.
    fn on_retired(&self) -> OnRetired {
        let storage = Arc::clone(&self.storage);
        Box::new(move |version: KekVersion| {
            let storage = Arc::clone(&storage);
            Box::pin(async move {
                if let Err(e) = audit_retired(&*storage, &version).await {
                    tracing::error!(error = %e, "the retirement of a KEK version could not be audited");
                }
            })
        })
    }

    /// Stops the rewrap job (shutdown); a later start resumes it.
    pub(crate) fn stop_rotation(&self) {
        if let Some(rotation) = &self.rotation {
            rotation.stop();
        }
    }
}

async fn audit_retired(storage: &dyn Storage, version: &KekVersion) -> Result<(), CoreError> {
    let Some(account) = find_operator_account(storage).await? else {
        return Ok(());
    };
    let entry: AuditEntry = build_entry(
        account,
        Event {
            action: AuditAction::KekRetire,
            outcome: AuditOutcome::Success,
            target: Target::kek(),
            details: Details {
                kek_version: Some(version.version),
                kek_id: Some(version.kek_id.0.clone()),
                ..Details::default()
            },
            who: Actor::Job("kek rotation"),
        },
    )?;
    storage.append_audit(&[entry]).await?;
    Ok(())
}
