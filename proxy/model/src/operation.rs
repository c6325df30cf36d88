//! What a request does to a repository (`Operation`): the word the rules, tokens' scopes and
//! policy plugins share.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Pull,
    Push,
    Delete,
    List,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Pull => "pull",
            Operation::Push => "push",
            Operation::Delete => "delete",
            Operation::List => "list",
        }
    }
}

impl std::str::FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pull" => Ok(Operation::Pull),
            "push" => Ok(Operation::Push),
            "delete" => Ok(Operation::Delete),
            "list" => Ok(Operation::List),
            other => Err(format!(
                "{other:?} is not an operation; use pull, push, delete or list"
            )),
        }
    }
}
