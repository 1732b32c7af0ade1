//! The RPM tag numbers osbuilder reads (rpmtag.h), and the dependency and file flags.

// Signature header.
pub const SIG_SIZE: u32 = 1000;
pub const SIG_PGP: u32 = 1002;
pub const SIG_MD5: u32 = 1004;
pub const SIG_GPG: u32 = 1005;
pub const SIG_PAYLOADSIZE: u32 = 1007;
pub const SIG_DSA: u32 = 267;
pub const SIG_RSA: u32 = 268;
pub const SIG_SHA1: u32 = 269;
pub const SIG_LONGSIZE: u32 = 270;
pub const SIG_LONGARCHIVESIZE: u32 = 271;
pub const SIG_SHA256: u32 = 273;
pub const SIG_OPENPGP: u32 = 278;

// Main header.
pub const NAME: u32 = 1000;
pub const VERSION: u32 = 1001;
pub const RELEASE: u32 = 1002;
pub const EPOCH: u32 = 1003;
pub const SUMMARY: u32 = 1004;
pub const BUILDTIME: u32 = 1006;
pub const SIZE: u32 = 1009;
pub const LICENSE: u32 = 1014;
pub const GROUP: u32 = 1016;
pub const ARCH: u32 = 1022;
pub const PREIN: u32 = 1023;
pub const POSTIN: u32 = 1024;
pub const PREUN: u32 = 1025;
pub const POSTUN: u32 = 1026;
pub const OLDFILENAMES: u32 = 1027;
pub const FILESIZES: u32 = 1028;
pub const FILESTATES: u32 = 1029;
pub const FILEMODES: u32 = 1030;
pub const FILERDEVS: u32 = 1033;
pub const FILEMTIMES: u32 = 1034;
pub const FILEDIGESTS: u32 = 1035;
pub const FILELINKTOS: u32 = 1036;
pub const FILEFLAGS: u32 = 1037;
pub const FILEUSERNAME: u32 = 1039;
pub const FILEGROUPNAME: u32 = 1040;
pub const SOURCERPM: u32 = 1044;
pub const ARCHIVESIZE: u32 = 1046;
pub const PROVIDENAME: u32 = 1047;
pub const REQUIREFLAGS: u32 = 1048;
pub const REQUIRENAME: u32 = 1049;
pub const REQUIREVERSION: u32 = 1050;
pub const CONFLICTFLAGS: u32 = 1053;
pub const CONFLICTNAME: u32 = 1054;
pub const CONFLICTVERSION: u32 = 1055;
pub const TRIGGERNAME: u32 = 1066;
pub const PREINPROG: u32 = 1085;
pub const POSTINPROG: u32 = 1086;
pub const PREUNPROG: u32 = 1087;
pub const POSTUNPROG: u32 = 1088;
pub const OBSOLETENAME: u32 = 1090;
pub const FILEDEVICES: u32 = 1095;
pub const FILEINODES: u32 = 1096;
pub const PROVIDEFLAGS: u32 = 1112;
pub const PROVIDEVERSION: u32 = 1113;
pub const OBSOLETEFLAGS: u32 = 1114;
pub const OBSOLETEVERSION: u32 = 1115;
pub const DIRINDEXES: u32 = 1116;
pub const BASENAMES: u32 = 1117;
pub const DIRNAMES: u32 = 1118;
pub const PAYLOADFORMAT: u32 = 1124;
pub const PAYLOADCOMPRESSOR: u32 = 1125;
pub const INSTALLCOLOR: u32 = 1127;
pub const INSTALLTID: u32 = 1128;
pub const PRETRANS: u32 = 1151;
pub const POSTTRANS: u32 = 1152;
pub const PRETRANSPROG: u32 = 1153;
pub const POSTTRANSPROG: u32 = 1154;
pub const INSTALLTIME: u32 = 1008;
pub const LONGFILESIZES: u32 = 5008;
pub const FILECAPS: u32 = 5010;
pub const FILEDIGESTALGO: u32 = 5011;
pub const RECOMMENDNAME: u32 = 5046;
pub const SUGGESTNAME: u32 = 5049;
pub const SUPPLEMENTNAME: u32 = 5052;
pub const ENHANCENAME: u32 = 5055;
pub const FILETRIGGERNAME: u32 = 5069;
pub const TRANSFILETRIGGERNAME: u32 = 5079;
pub const PAYLOADDIGEST: u32 = 5092;
pub const PAYLOADDIGESTALGO: u32 = 5093;
pub const PAYLOADDIGESTALT: u32 = 5097;

// Install-time copies of signature tags (headerMergeLegacySigs).
pub const INST_SIGSIZE: u32 = 257;
pub const INST_SIGPGP: u32 = 259;
pub const INST_SIGMD5: u32 = 261;
pub const INST_DSAHEADER: u32 = 267;
pub const INST_RSAHEADER: u32 = 268;
pub const INST_SHA1HEADER: u32 = 269;
pub const INST_SHA256HEADER: u32 = 273;

/// Dependency sense flags (RPMSENSE_*).
pub mod sense {
    pub const LESS: u32 = 0x02;
    pub const GREATER: u32 = 0x04;
    pub const EQUAL: u32 = 0x08;
    /// A dependency on an rpmlib feature (`rpmlib(PayloadIsZstd)`): rpm's own, not a package.
    pub const RPMLIB: u32 = 1 << 24;
}

/// File flags (RPMFILE_*).
pub mod file {
    pub const CONFIG: u32 = 1 << 0;
    pub const DOC: u32 = 1 << 1;
    pub const MISSINGOK: u32 = 1 << 3;
    pub const NOREPLACE: u32 = 1 << 4;
    pub const GHOST: u32 = 1 << 6;
}

/// File digest algorithms (PGPHASHALGO_*), as FILEDIGESTALGO and PAYLOADDIGESTALGO name them.
pub mod hash {
    pub const MD5: u64 = 1;
    pub const SHA1: u64 = 2;
    pub const SHA256: u64 = 8;
    pub const SHA384: u64 = 9;
    pub const SHA512: u64 = 10;
}
