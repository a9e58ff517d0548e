package main

import "flag"

// The commands, in one table: what each is called, what it takes and which
// function does the work (in cmd_<name>.go).
var commandList = []command{
	{
		name: "agent", summary: "run the control daemon",
		run: runAgent,
	},
	{
		name: "backup", summary: "back up VMs now, as one batch", usage: "usage: controld backup [flags] VM...",
		minArgs: 1, maxArgs: -1, argsWanted: "name at least one VM",
		flags: func(f *flag.FlagSet) {
			f.BoolVar(&backupWait, "wait", true, "follow the leaves until they are finished")
		},
		timeout: true,
		run:     runBackup,
	},
	{
		name: "ls", summary: "list a VM's backups", usage: "usage: controld ls [flags] VM",
		minArgs: 1, maxArgs: 1, argsWanted: "name one VM",
		json: true,
		run:  runLs,
	},
	{
		name: "restore", summary: "restore a VM from one of its backups",
		usage: `usage: controld restore [flags] VM          list the VM's restorable backups
       controld restore [flags] VM LEAF     restore the VM from backup LEAF
       controld restore -cancel VM LEAF     cancel a restore that waits for a decision`,
		minArgs: 1, maxArgs: 2, argsWanted: "name a VM, and a backup to restore",
		flags: func(f *flag.FlagSet) {
			f.BoolVar(&restoreYes, "yes", false, "go past the point of no return without asking (for scripts)")
			f.BoolVar(&restoreCancel, "cancel", false, "cancel a restore of LEAF that waits for a decision")
		},
		timeout: true,
		run:     runRestore,
	},
	{
		name: "schedule", summary: "list the next scheduled backup of every VM",
		json: true,
		run:  runSchedule,
	},
	{
		name: "status", summary: "running leaves and every VM's last result",
		json: true,
		run:  runStatus,
	},
	{
		name: "recover", summary: "rebuild the backup catalog from the backup storage (run where it is mounted)", raw: runRecover,
	},
	{
		name: "chunks", summary: "garbage-collect, verify or rebuild from a chunk store (run where it is mounted)", raw: runChunks,
	},
	{
		name: "web", summary: "serve the web UI (web: in the config)",
		noStore: true,
		run:     runWeb,
	},
}

func init() {
	for _, c := range commandList {
		register(c)
	}
}
