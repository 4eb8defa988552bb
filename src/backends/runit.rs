//! runit backend (placeholder until implemented): refuses every action clearly.

use super::{Backend, Part};
use crate::config::Domain;
use crate::plan::State;
use anyhow::{Result, bail};

pub struct Runit {
    _name: String,
}

impl Runit {
    pub fn new(d: &Domain) -> Runit {
        Runit {
            _name: d.name.clone(),
        }
    }
}

impl Backend for Runit {
    fn status(&self, _name: &str) -> Result<State> {
        bail!("the runit backend is not implemented yet")
    }
    fn stop(&self, _name: &str, _part: Part) -> Result<()> {
        bail!("the runit backend is not implemented yet")
    }
    fn start(&self, _name: &str, _part: Part) -> Result<()> {
        bail!("the runit backend is not implemented yet")
    }
    fn is_linked(&self, _name: &str) -> bool {
        false
    }
    fn link(&self, _name: &str) -> Result<()> {
        bail!("the runit backend is not implemented yet")
    }
    fn unlink(&self, _name: &str) -> Result<()> {
        bail!("the runit backend is not implemented yet")
    }
}
