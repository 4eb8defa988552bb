//! s6-rc backend (placeholder until implemented): refuses every action clearly.

use super::{Backend, Part};
use crate::config::Domain;
use crate::plan::State;
use anyhow::{Result, bail};

pub struct S6Rc {
    _name: String,
}

impl S6Rc {
    pub fn new(d: &Domain) -> S6Rc {
        S6Rc {
            _name: d.name.clone(),
        }
    }
}

impl Backend for S6Rc {
    fn status(&self, _name: &str) -> Result<State> {
        bail!("the s6-rc backend is not implemented yet")
    }
    fn stop(&self, _name: &str, _part: Part) -> Result<()> {
        bail!("the s6-rc backend is not implemented yet")
    }
    fn start(&self, _name: &str, _part: Part) -> Result<()> {
        bail!("the s6-rc backend is not implemented yet")
    }
    fn is_linked(&self, _name: &str) -> bool {
        false
    }
    fn link(&self, _name: &str) -> Result<()> {
        bail!("the s6-rc backend is not implemented yet")
    }
    fn unlink(&self, _name: &str) -> Result<()> {
        bail!("the s6-rc backend is not implemented yet")
    }
}
