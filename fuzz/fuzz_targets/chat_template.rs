#![no_main]
softcot_fuzz::target!("chat_template");
