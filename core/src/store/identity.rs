//! Who this phone is (device, carer, Automerge actor, server) and what it knows of the server's clock.

use super::{PhoneStore, Result};
use crate::clock::ClockOffset;
use crate::domain::*;
use automerge::ActorId;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// An offset older than this no longer vouches for an event's time (brief, section 4).
pub const OFFSET_FRESH_FOR_MS: Millis = DAY_MS;

/// Who this phone is, once enrolled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub device_id: DeviceId,
    pub carer_id: PersonId,
    pub server_url: String,
    pub token: String,
}

impl PhoneStore {
    pub fn set_identity(&self, id: &DeviceIdentity) -> Result<()> {
        let conn = self.lock()?;
        let actor = ActorId::random();
        conn.execute(
            "INSERT INTO device (id, device_id, carer_id, actor, server_url, token) VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET device_id = ?1, carer_id = ?2, server_url = ?4, token = ?5",
            params![id.device_id.to_string(), id.carer_id.to_string(), actor.to_bytes(), id.server_url, id.token],
        )?;
        Ok(())
    }

    pub fn identity(&self) -> Result<Option<DeviceIdentity>> {
        let conn = self.lock()?;
        Ok(read_identity(&conn)?.map(|(id, _)| id))
    }

    /// Record a freshly measured offset (server minus device).
    pub fn set_clock_offset(&self, offset: ClockOffset) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO clock (id, offset_ms, measured_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET offset_ms = ?1, measured_at = ?2",
            params![offset.offset_ms, offset.measured_at],
        )?;
        Ok(())
    }

    pub fn clock_offset(&self) -> Result<Option<ClockOffset>> {
        let conn = self.lock()?;
        Ok(read_offset(&conn)?)
    }

    pub fn last_sync_at(&self) -> Result<Option<Millis>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row("SELECT last_sync_at FROM sync_meta WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
    }

    // Written by the sync client, which lands in a separate change.
    pub(crate) fn set_last_sync_at(&self, at: Millis) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO sync_meta (id, last_sync_at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET last_sync_at = ?1",
            params![at],
        )?;
        Ok(())
    }
}

pub(super) fn read_identity(conn: &Connection) -> rusqlite::Result<Option<(DeviceIdentity, ActorId)>> {
    conn.query_row(
        "SELECT device_id, carer_id, actor, server_url, token FROM device WHERE id = 1",
        [],
        |r| {
            let parse = |i: usize, s: String| {
                s.parse::<uuid::Uuid>().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
                })
            };
            let device_id = DeviceId(parse(0, r.get(0)?)?);
            let carer_id = PersonId(parse(1, r.get(1)?)?);
            let actor: Vec<u8> = r.get(2)?;
            Ok((
                DeviceIdentity {
                    device_id,
                    carer_id,
                    server_url: r.get(3)?,
                    token: r.get(4)?,
                },
                ActorId::from(actor),
            ))
        },
    )
    .optional()
}

pub(super) fn read_offset(conn: &Connection) -> rusqlite::Result<Option<ClockOffset>> {
    conn.query_row("SELECT offset_ms, measured_at FROM clock WHERE id = 1", [], |r| {
        Ok(ClockOffset {
            offset_ms: r.get(0)?,
            measured_at: r.get(1)?,
        })
    })
    .optional()
}
