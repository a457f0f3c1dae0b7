//! Meta-train / meta-test split shared by the task families: evaluation tasks are drawn from a
//! part of the family that meta-training never sees.

use std::fmt;
use std::str::FromStr;

/// Which part of a task family to sample from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Meta-training tasks (the default).
    #[default]
    Train,
    /// Held-out meta-test tasks, disjoint from the training ones.
    Test,
}

impl Split {
    /// Both splits, train first.
    pub const ALL: [Split; 2] = [Split::Train, Split::Test];

    /// The id of the split in random-stream paths (`0` train, `1` test).
    pub fn id(self) -> u64 {
        match self {
            Self::Train => 0,
            Self::Test => 1,
        }
    }

    /// The split's name, `train` or `test`, for messages and command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "train" => Ok(Self::Train),
            "test" => Ok(Self::Test),
            other => Err(format!("unknown split `{other}` (expected train or test)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Split::ALL {
            assert_eq!(s.as_str().parse::<Split>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("val".parse::<Split>().is_err());
        assert_ne!(Split::Train.id(), Split::Test.id());
    }
}
