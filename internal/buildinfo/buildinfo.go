// Package buildinfo reports the version lopnr was built from, read from the
// Go build information so that no version string is kept by hand.
package buildinfo

import (
	"runtime/debug"
)

// Info is what a binary knows of its own build.
type Info struct {
	Version   string // module version, "(devel)" for a work-tree build
	Revision  string // VCS revision, with "+dirty" when the tree was modified
	GoVersion string
}

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "(unknown)"}
	}
	info := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && info.Revision != "" {
		info.Revision += "+dirty"
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	return info
}

// String formats the information for a --version line.
func (i Info) String() string {
	s := i.Version
	if i.Revision != "" {
		s += " " + i.Revision
	}
	return s + " " + i.GoVersion
}
