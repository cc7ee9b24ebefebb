package server

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"

	"github.com/lopnr/lopnr/keystore"
)

// cohortIndexes resolve partners' keys to a project's persons: by LopNr,
// or by the OPRF pseudonym of each person. A project's index is built once
// and kept until its kodnyckel changes (it only grows: new persons get the
// next LopNr) or is destroyed, so that an upload costs the rows it sends,
// not the pseudonyms of the whole cohort.
type cohortIndexes struct {
	mu       sync.Mutex
	projects map[string]*cohortIndex
}

// cohortIndex is one project's index. Its fields are replaced, never
// changed in place: a resolver keeps reading the version it was given.
type cohortIndex struct {
	mu         sync.Mutex
	persons    int64
	canonicals []string         // by LopNr - 1
	pseudonyms map[string]int32 // pseudonym -> LopNr - 1; nil until asked for
	// computed counts the pseudonyms computed for the index, for tests.
	computed int64
}

func (c *cohortIndexes) of(project string) *cohortIndex {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.projects == nil {
		c.projects = map[string]*cohortIndex{}
	}
	ix, ok := c.projects[project]
	if !ok {
		ix = &cohortIndex{}
		c.projects[project] = ix
	}
	return ix
}

// forget drops a project's index (its kodnyckel is destroyed).
func (c *cohortIndexes) forget(project string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.projects, project)
}

// resolver returns the function that finds the canonical personnummer of
// a partner row's key (a LopNr, or a pseudonym), or "" for a key of nobody
// in the project.
func (c *cohortIndexes) resolver(ctx context.Context, s *Server, project string, byPseudonym bool) (func(string) string, error) {
	ix := c.of(project)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	persons, err := s.cfg.Keys.Persons(ctx, project)
	if err != nil {
		return nil, err
	}
	if persons != ix.persons {
		canonicals := ix.canonicals[:len(ix.canonicals):len(ix.canonicals)]
		if err := s.cfg.Keys.Mappings(ctx, project, func(cn string, r keystore.RunNumber) error {
			switch {
			case int(r) <= len(ix.canonicals):
				return nil // indexed already
			case int(r) != len(canonicals)+1:
				return fmt.Errorf("project %s: the kodnyckel's LopNr are not 1..N in order (LopNr %d after %d)", project, r, len(canonicals))
			}
			canonicals = append(canonicals, cn)
			return nil
		}); err != nil {
			return nil, err
		}
		if ix.pseudonyms != nil {
			if ix.pseudonyms, err = s.addPseudonyms(ctx, project, ix, canonicals); err != nil {
				return nil, err
			}
		}
		ix.canonicals, ix.persons = canonicals, int64(len(canonicals))
	}
	if byPseudonym && ix.pseudonyms == nil {
		if ix.pseudonyms, err = s.addPseudonyms(ctx, project, ix, ix.canonicals); err != nil {
			return nil, err
		}
	}
	canonicals, pseudonyms := ix.canonicals, ix.pseudonyms
	if !byPseudonym {
		return func(key string) string {
			r, err := strconv.ParseInt(strings.TrimSpace(key), 10, 64)
			if err != nil || r < 1 || r > int64(len(canonicals)) {
				return ""
			}
			return canonicals[r-1]
		}, nil
	}
	return func(key string) string {
		if i, ok := pseudonyms[strings.ToLower(strings.TrimSpace(key))]; ok {
			return canonicals[i]
		}
		return ""
	}, nil
}

// addPseudonyms returns a new pseudonym map: the index's, with the
// pseudonyms of the canonicals it does not have yet.
func (s *Server) addPseudonyms(ctx context.Context, project string, ix *cohortIndex, canonicals []string) (map[string]int32, error) {
	out := make(map[string]int32, len(canonicals))
	maps.Copy(out, ix.pseudonyms)
	from := len(out)
	if from >= len(canonicals) {
		return out, nil
	}
	key, err := s.projectKey(ctx, project)
	if err != nil {
		return nil, err
	}
	ps, err := key.Pseudonyms(canonicals[from:], 0)
	if err != nil {
		return nil, err
	}
	for i, p := range ps {
		out[p] = int32(from + i)
	}
	ix.computed += int64(len(ps))
	return out, nil
}
