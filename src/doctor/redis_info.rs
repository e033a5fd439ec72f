//! Reading `INFO` and `CONFIG GET` answers.

use std::collections::HashMap;

/// `INFO`'s `field:value` lines (every section) by field.
#[derive(Clone, Debug, Default)]
pub(super) struct Info(HashMap<String, String>);

impl Info {
    pub(super) fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    pub(super) fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    pub(super) fn num(&self, field: &str) -> Option<f64> {
        self.get(field)?.parse().ok()
    }

    /// The replicas the master lists (`slaveN:ip=…,port=…,state=…,offset=…,lag=…`).
    pub(super) fn replicas(&self) -> Vec<HashMap<String, String>> {
        let count = self.num("connected_slaves").unwrap_or(0.0) as usize;
        (0..count)
            .filter_map(|i| self.get(&format!("slave{i}")))
            .map(|line| {
                line.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_replicas_are_read() {
        let info = Info::parse(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=10.0.0.2,port=6379,state=online,offset=100,lag=0\r\n\
             slave1:ip=10.0.0.3,port=6379,state=wait_bgsave,offset=0,lag=3\r\n\
             master_repl_offset:120\r\n",
        );
        assert_eq!(info.get("role"), Some("master"));
        assert_eq!(info.num("master_repl_offset"), Some(120.0));
        let replicas = info.replicas();
        assert_eq!(replicas.len(), 2);
        assert_eq!(replicas[1]["state"], "wait_bgsave");
    }
}
