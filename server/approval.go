package server

import (
	"github.com/lopnr/lopnr/extract"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// approvalFromRules reads the approved variables and sources of a
// project's rules, refusing what extract would not accept, naming the
// field (under prefix, such as "rules").
func approvalFromRules(prefix string, r *lopnrv1.ProjectRules) (extract.Approval, error) {
	a := extract.Approval{AllowPersonnummer: r.GetAllowPersonnummer()}
	if len(r.GetApprovedVariables()) == 0 {
		return a, &fieldError{prefix + "approved_variables", "at least one approved variable"}
	}
	for i, v := range r.GetApprovedVariables() {
		if v.GetSource() == "" || v.GetColumn() == "" {
			return a, &fieldError{field(prefix+"approved_variables", i), "a source and a column"}
		}
		a.Variables = append(a.Variables, extract.ApprovedVariable{Source: v.GetSource(), Column: v.GetColumn(), Transforms: v.GetTransforms()})
	}
	// TODO(trust model): approved sources.
	return a, nil
}

// rulesProto is an approval and recipients as the API shows them.
func rulesProto(a extract.Approval, recipients []string) *lopnrv1.ProjectRules {
	out := &lopnrv1.ProjectRules{AllowPersonnummer: a.AllowPersonnummer, Recipients: recipients}
	for _, v := range a.Variables {
		out.ApprovedVariables = append(out.ApprovedVariables, &lopnrv1.ApprovedVariable{Source: v.Source, Column: v.Column, Transforms: v.Transforms})
	}
	return out
}
