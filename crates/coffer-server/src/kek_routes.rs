//! Handlers of `/client/v4/kek`: the instance's key-encryption key (instance operator only).
//! Versions are named by number and public id; no key material is ever part of an answer.

use axum::Json;
use axum::extract::State;
use coffer_api::{Envelope, KekReseal, KekRotation, KekRotationStarted, KekStatus, KekVersion};
use coffer_core::{KekState, KekVersionUsage};

use crate::error::ApiResult;
use crate::extract::Auth;
use crate::state::AppState;

type Reply<T> = ApiResult<Json<Envelope<T>>>;

fn version(v: &KekVersionUsage) -> KekVersion {
    KekVersion {
        version: v.version.version,
        kek_id: v.version.kek_id.0.clone(),
        provider: v.version.provider.to_owned(),
        state: v.version.state.as_str().to_owned(),
        deks: v.deks,
        instance_keys: v.instance_keys,
        created: v.version.created.to_rfc3339(),
    }
}

/// `GET /client/v4/kek`: the active version, the versions still in use and the keys each
/// wraps, and the progress of a rotation.
pub async fn status(State(app): State<AppState>, Auth(who): Auth) -> Reply<KekStatus> {
    let report = app.coffer.kek_status(&who).await?;
    let rotation = report.rotation.as_ref().map(|r| KekRotation {
        state: if r.status.error.is_some() {
            "failed"
        } else {
            "running"
        }
        .to_owned(),
        from_version: r.from.version,
        to_version: report.active.version,
        rewrapped: r.status.rewrapped,
        remaining: r.remaining,
        // The rotation began when the version it moves to was made.
        started: report.active.created.to_rfc3339(),
        error: r.status.error.clone(),
    });
    Ok(Json(Envelope::ok(KekStatus {
        active_version: report.active.version,
        versions: report
            .versions
            .iter()
            .filter(|v| v.version.state != KekState::Retired)
            .map(version)
            .collect(),
        rotation,
        reseal: report.reseal.map(|r| KekReseal {
            running: r.running,
            resealed: r.resealed,
            remaining: r.remaining,
            destroyed_deks: r.destroyed_deks,
            pruned_versions: r.pruned_versions,
            error: r.error,
        }),
    })))
}

/// `POST /client/v4/kek/rotations`: makes a new KEK version active and starts rewrapping the
/// keys of the previous one in the background. 409 `kek_rotation_running` while an earlier
/// rotation has keys left.
pub async fn rotate(State(app): State<AppState>, Auth(who): Auth) -> Reply<KekRotationStarted> {
    let (new, previous) = app.coffer.start_kek_rotation(&who).await?;
    Ok(Json(Envelope::ok(KekRotationStarted {
        active_version: new.version,
        kek_id: new.kek_id.0,
        from_version: previous.version,
    })))
}
