package server

import (
	"slices"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/linkage"
)

// importApproval is the approved list a partner's import is checked
// against, when it is received and when its job runs: the project's, and
// the cohort list that lopnrd itself writes for the import (the project's
// persons among the partner's rows, matched on the project's own index),
// which no one chose and which says nothing of anyone that the project
// does not hold. Every other source a job reads must be on the project's
// list (extract.CheckApproval); a job an extractor submits is checked
// against the project's list alone.
func importApproval(a extract.Approval, spec *linkage.JobSpec) extract.Approval {
	if spec.Cohort.List == "" {
		return a
	}
	a.Sources = append(slices.Clone(a.Sources), extract.ApprovedSource{Name: spec.Cohort.List, Profile: "cohort-list"})
	return a
}
