//! Names for ids: what people read instead of a UUID, on the dashboard's pages and beside the ids
//! of the API's report rows (JSON and CSV). Names are presentation: the metrics never see them;
//! they are looked up here, at the server's edge, from the reference data in the store.

use crate::store::{Client, Contract, Person, ServerStore, StoreError};
use caresync_core::domain::*;
use caresync_core::metrics::GroupBy;
use serde_json::Value;
use std::collections::HashMap;

/// Names of everyone and everything a page or report mentions, read once per request.
pub struct Names {
    pub people: HashMap<PersonId, Person>,
    pub clients: HashMap<ClientId, Client>,
    pub contracts: HashMap<ContractId, Contract>,
    pub teams: HashMap<TeamId, String>,
}

/// The id fields of report rows that get a name field beside them, and its name.
pub const NAMED_IDS: &[(&str, &str)] = &[
    ("group", "group_name"),
    ("contract_id", "contract_name"),
    ("client_id", "client_name"),
    ("carer_id", "carer_name"),
    ("team_id", "team_name"),
];

/// Beside a contract's name, its commissioner (unless the row has one already).
const COMMISSIONER: &str = "commissioner";

impl Names {
    pub fn from_store(store: &dyn ServerStore) -> Result<Self, StoreError> {
        Ok(Self {
            people: store.people()?.into_iter().map(|p| (p.id, p)).collect(),
            clients: store.clients()?.into_iter().map(|c| (c.id, c)).collect(),
            contracts: store.contracts()?.into_iter().map(|c| (c.id, c)).collect(),
            teams: store.teams()?.into_iter().map(|t| (t.id, t.name)).collect(),
        })
    }

    pub fn person(&self, id: PersonId) -> String {
        self.people
            .get(&id)
            .map_or_else(|| "(someone no longer listed)".into(), |p| p.name.clone())
    }

    pub fn client(&self, id: ClientId) -> String {
        self.clients
            .get(&id)
            .map_or_else(|| "(unknown client)".into(), |c| c.name.clone())
    }

    pub fn contract(&self, id: ContractId) -> String {
        self.contracts
            .get(&id)
            .map_or_else(|| "(unknown contract)".into(), |c| c.name.clone())
    }

    pub fn team(&self, id: TeamId) -> String {
        self.teams
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "(unknown team)".into())
    }

    pub fn team_of(&self, person: PersonId) -> String {
        self.people
            .get(&person)
            .and_then(|p| p.team_id)
            .and_then(|t| self.teams.get(&t).cloned())
            .unwrap_or_default()
    }

    /// A report group's name: report rows name groups by id (contract, carer, client, team) or by
    /// word (model, commissioner, `all`).
    pub fn group(&self, group: &str) -> String {
        if let Ok(id) = group.parse::<uuid::Uuid>() {
            if let Some(c) = self.contracts.get(&ContractId(id)) {
                return c.name.clone();
            }
            if let Some(p) = self.people.get(&PersonId(id)) {
                return p.name.clone();
            }
            if let Some(c) = self.clients.get(&ClientId(id)) {
                return c.name.clone();
            }
            if let Some(t) = self.teams.get(&TeamId(id)) {
                return t.clone();
            }
        }
        match group {
            "spot" => "Spot".into(),
            "framework" => "Framework".into(),
            "all" => "All visits".into(),
            "" => "(no team)".into(),
            other => other.to_string(),
        }
    }

    /// A report group's name when the grouping is known (so a commissioner called `all` or
    /// `spot` keeps their own name): `caresync_core::metrics::GroupBy` says what a key is.
    pub fn group_name(&self, by: GroupBy, key: &str) -> String {
        let id = key.parse::<uuid::Uuid>().ok();
        match by {
            GroupBy::All => "All visits".into(),
            GroupBy::Contract => {
                id.map_or_else(|| "(unknown contract)".into(), |id| self.contract(ContractId(id)))
            }
            GroupBy::Client => id.map_or_else(|| "(unknown client)".into(), |id| self.client(ClientId(id))),
            GroupBy::Carer => id.map_or_else(
                || "(someone no longer listed)".into(),
                |id| self.person(PersonId(id)),
            ),
            GroupBy::Team => id.map_or_else(|| "(no team)".into(), |id| self.team(TeamId(id))),
            GroupBy::CommissioningModel => match key {
                "spot" => "Spot".into(),
                "framework" => "Framework".into(),
                _ => "(unknown contract)".into(),
            },
            GroupBy::Commissioner => key.to_string(),
        }
    }

    /// The name for one id field of a row (see [`NAMED_IDS`]); `None` for a field that is not
    /// an id, or an id that is absent.
    fn name_of(&self, field: &str, id: &Value, group_by: Option<GroupBy>) -> Option<String> {
        let text = id.as_str()?;
        let uuid = || text.parse::<uuid::Uuid>().ok();
        Some(match field {
            "group" => self.group_name(group_by?, text),
            "contract_id" => self.contract(ContractId(uuid()?)),
            "client_id" => self.client(ClientId(uuid()?)),
            "carer_id" => self.person(PersonId(uuid()?)),
            "team_id" => self.team(TeamId(uuid()?)),
            _ => return None,
        })
    }

    /// Adds a name field beside each id field of each row (a JSON object): `contract_name` (and
    /// the contract's `commissioner`, unless the row has one) beside `contract_id`,
    /// `client_name`, `carer_name`, `team_name`, and `group_name` beside a report row's `group`
    /// (named by `group_by`). Rows that are not objects are left as they are.
    pub fn name_rows(&self, rows: &mut [Value], group_by: Option<GroupBy>) {
        for row in rows {
            let Some(object) = row.as_object_mut() else {
                continue;
            };
            for (id_field, name_field) in NAMED_IDS {
                let name = object
                    .get(*id_field)
                    .and_then(|id| self.name_of(id_field, id, group_by));
                if let Some(name) = name {
                    object.insert((*name_field).to_string(), Value::String(name));
                }
            }
            if !object.contains_key(COMMISSIONER) {
                let commissioner = object
                    .get("contract_id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.parse::<uuid::Uuid>().ok())
                    .and_then(|id| self.contracts.get(&ContractId(id)))
                    .map(|c| c.commissioner.clone());
                if let Some(commissioner) = commissioner {
                    object.insert(COMMISSIONER.into(), Value::String(commissioner));
                }
            }
        }
    }
}

/// A row type's CSV columns with the name columns [`Names::name_rows`] adds, each right after
/// its id column (and the commissioner after a contract's name, unless there is a commissioner
/// column already).
pub fn named_columns(columns: &[&'static str]) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(columns.len() + 4);
    for column in columns {
        out.push(*column);
        if let Some((_, name)) = NAMED_IDS.iter().find(|(id, _)| id == column) {
            out.push(*name);
            if *column == "contract_id" && !columns.contains(&COMMISSIONER) {
                out.push(COMMISSIONER);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use caresync_core::metrics::{CsvRow, KpiRow, ReconciliationRow, ReportRow};
    use serde_json::json;

    fn names() -> (Names, ContractId, ClientId, PersonId, TeamId) {
        let (contract, client, carer, team) =
            (ContractId::new(), ClientId::new(), PersonId::new(), TeamId::new());
        let names = Names {
            people: [(
                carer,
                Person {
                    id: carer,
                    name: "Ann Carer".into(),
                    role: Role::Carer,
                    team_id: Some(team),
                    active: true,
                },
            )]
            .into(),
            clients: [(
                client,
                Client {
                    id: client,
                    name: "=HYPERLINK(\"x\")".into(),
                    location: None,
                    tag_ids: vec![],
                },
            )]
            .into(),
            contracts: [(
                contract,
                Contract {
                    id: contract,
                    name: "Framework 2026".into(),
                    commissioner: "Northshire CC".into(),
                    model: CommissioningModel::Framework,
                    rules: json!({}),
                },
            )]
            .into(),
            teams: [(team, "North".to_string())].into(),
        };
        (names, contract, client, carer, team)
    }

    #[test]
    fn name_columns_sit_beside_their_ids() {
        assert_eq!(
            &named_columns(ReconciliationRow::COLUMNS)[..6],
            &[
                "week",
                "week_start",
                "client_id",
                "client_name",
                "contract_id",
                "contract_name"
            ]
        );
        assert!(named_columns(ReconciliationRow::COLUMNS).contains(&"commissioner"));
        let kpi = named_columns(KpiRow::COLUMNS);
        assert_eq!(&kpi[..3], &["contract_id", "contract_name", "commissioner"]);
        assert_eq!(kpi.iter().filter(|c| **c == "commissioner").count(), 1);
        let rows = named_columns(ReportRow::COLUMNS);
        let group = rows.iter().position(|c| *c == "group");
        assert_eq!(group.map(|g| rows[g + 1]), Some("group_name"));
    }

    #[test]
    fn rows_get_names_of_contracts_clients_carers_teams_and_groups() {
        let (names, contract, client, carer, team) = names();
        let mut rows = vec![
            json!({"contract_id": contract, "client_id": client, "carer_id": carer, "team_id": team}),
            json!({"contract_id": ContractId::new(), "client_id": null}),
        ];
        names.name_rows(&mut rows, None);
        assert_eq!(rows[0]["contract_name"], "Framework 2026");
        assert_eq!(rows[0]["commissioner"], "Northshire CC");
        // Names are data here; the CSV writer neutralises them.
        assert_eq!(rows[0]["client_name"], "=HYPERLINK(\"x\")");
        assert_eq!(rows[0]["carer_name"], "Ann Carer");
        assert_eq!(rows[0]["team_name"], "North");
        assert_eq!(rows[1]["contract_name"], "(unknown contract)");
        assert!(rows[1].get("client_name").is_none());
        assert!(rows[1].get("commissioner").is_none());

        let group = |by, key: &str| {
            let mut rows = vec![json!({ "group": key })];
            names.name_rows(&mut rows, Some(by));
            rows[0]["group_name"].as_str().unwrap_or_default().to_string()
        };
        assert_eq!(group(GroupBy::Contract, &contract.to_string()), "Framework 2026");
        assert_eq!(group(GroupBy::Carer, &carer.to_string()), "Ann Carer");
        assert_eq!(group(GroupBy::Team, &team.to_string()), "North");
        assert_eq!(group(GroupBy::Team, "no_team"), "(no team)");
        assert_eq!(group(GroupBy::CommissioningModel, "spot"), "Spot");
        assert_eq!(group(GroupBy::Commissioner, "all"), "all");
        assert_eq!(group(GroupBy::All, "all"), "All visits");
    }
}
