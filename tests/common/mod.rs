pub mod apkrepo;
