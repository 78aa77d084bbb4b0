#![no_main]
softcot_fuzz::target!("toml_config");
