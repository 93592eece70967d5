"""One module per OWASP API category; each `run(ctx)` returns its findings. Check ids are
`<category>-<name>` (`--checks api2,api8-cors`, `--skip api4`)."""

from bastion.scanner.checks import api1, api2, api3, api4, api5, api6, api7, api8, api9, cmdi, graphql, sqli

MODULES = (
    api2,
    api1,
    api5,
    api6,
    api7,
    api8,
    sqli,
    cmdi,
    api9,
    graphql,
    api3,
    api4,
)  # api3 reads every answer seen; api4 bursts last
CHECK_IDS = sorted({cid for m in MODULES for cid in m.IDS})
