//! Upcasters: how events written by an older payload layout are read.
//!
//! Each envelope records its event type and the layout version of its
//! payload. When a variant's fields change, bump [`CURRENT_EVENT_SCHEMA`] for
//! that variant in its `schema_version`, keep the old layout's struct here,
//! and add a step that turns old payload bytes into the next layout. Steps
//! chain, so a v1 payload goes v1 → v2 → v3. Golden logs in `replay/` hold
//! payloads of every released layout and fail CI if a step is missing.

use crate::codec::CodecError;
use crate::store::StreamKind;

/// The layout version written today for every event type.
pub const CURRENT_EVENT_SCHEMA: u16 = 1;

/// One upcasting step: payload of `(kind, event_type)` at `from` → `from + 1`.
pub struct Step {
    pub kind: StreamKind,
    pub event_type: &'static str,
    pub from: u16,
    pub lift: fn(&[u8]) -> Result<Vec<u8>, CodecError>,
}

/// Every registered step. Empty while every released layout is current.
pub const STEPS: &[Step] = &[];

/// Lifts a payload to the current layout using `steps`.
pub fn upcast_with(
    steps: &[Step],
    current: u16,
    kind: StreamKind,
    event_type: &str,
    schema_version: u16,
    payload: &[u8],
) -> Result<Vec<u8>, CodecError> {
    if schema_version > current {
        return Err(CodecError::Decode(format!(
            "{event_type} has payload layout {schema_version}, newer than this build's {current}"
        )));
    }
    let mut bytes = payload.to_vec();
    let mut version = schema_version;
    while version < current {
        let step = steps
            .iter()
            .find(|s| s.kind == kind && s.event_type == event_type && s.from == version)
            .ok_or_else(|| {
                CodecError::Decode(format!(
                    "no upcaster for {event_type} from layout {version}"
                ))
            })?;
        bytes = (step.lift)(&bytes)?;
        version += 1;
    }
    Ok(bytes)
}

/// Lifts a payload to the current layout.
/// Borrows the payload when it is already current (the common case).
pub fn upcast<'a>(
    kind: StreamKind,
    event_type: &str,
    schema_version: u16,
    payload: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
    if schema_version == CURRENT_EVENT_SCHEMA {
        return Ok(std::borrow::Cow::Borrowed(payload));
    }
    upcast_with(
        STEPS,
        CURRENT_EVENT_SCHEMA,
        kind,
        event_type,
        schema_version,
        payload,
    )
    .map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use serde::{Deserialize, Serialize};

    // A worked example of the mechanism: a layout 1 that lacked `priority`,
    // lifted to a layout 2 that has it with a default.
    #[derive(Serialize, Deserialize)]
    struct V1 {
        id: String,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        id: String,
        priority: i32,
    }
    fn v1_to_v2(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let old: V1 = codec::decode(bytes)?;
        codec::encode(&V2 {
            id: old.id,
            priority: 0,
        })
    }

    #[test]
    fn steps_chain_and_missing_steps_are_errors() {
        let steps = [Step {
            kind: StreamKind::Job,
            event_type: "JobCreated",
            from: 1,
            lift: v1_to_v2,
        }];
        let old = codec::encode(&V1 { id: "j".into() }).unwrap();
        let lifted = upcast_with(&steps, 2, StreamKind::Job, "JobCreated", 1, &old).unwrap();
        let new: V2 = codec::decode(&lifted).unwrap();
        assert_eq!(
            new,
            V2 {
                id: "j".into(),
                priority: 0
            }
        );
        assert!(upcast_with(&steps, 2, StreamKind::Job, "JobDeleted", 1, &old).is_err());
        assert!(upcast_with(&steps, 2, StreamKind::Job, "JobCreated", 3, &old).is_err());
        assert_eq!(
            upcast_with(&steps, 2, StreamKind::Job, "JobCreated", 2, &old).unwrap(),
            old
        );
    }
}
