package transport

// TokenMethods is the table of every RPC a caller authenticated by an OIDC
// bearer token may call, with the least role it needs: RoleViewer for
// read-only RPCs, RoleAdmin for everything else an operator certificate may
// do. An RPC missing from this table is refused to every token
// (PermissionDenied), whatever its roles: WrapService and NodeService need
// certificates of their own kinds, and the methods in certificateOnly are
// for region nodes.
//
// Every method of AdminService and GovernanceService is in exactly one of
// TokenMethods and certificateOnly; a test fails when a method is added to
// admin.proto or governance.proto without being classified here. Classify
// a new RPC as RoleViewer only if it changes nothing and discloses nothing
// beyond what the other viewer RPCs show. SnapshotSave is RoleAdmin: it
// reads nothing else but exports every sealed key blob of the region.
var TokenMethods = map[string]Role{
	// AdminService, read-only.
	"/krypton.v1.AdminService/Members":        RoleViewer,
	"/krypton.v1.AdminService/ListPeers":      RoleViewer,
	"/krypton.v1.AdminService/Status":         RoleViewer,
	"/krypton.v1.AdminService/ListTenants":    RoleViewer,
	"/krypton.v1.AdminService/DescribeTenant": RoleViewer,
	"/krypton.v1.AdminService/ListKeys":       RoleViewer,
	"/krypton.v1.AdminService/DescribeKey":    RoleViewer,
	// AdminService, changes (and the snapshot export).
	"/krypton.v1.AdminService/Join":               RoleAdmin,
	"/krypton.v1.AdminService/Leave":              RoleAdmin,
	"/krypton.v1.AdminService/RemovePeer":         RoleAdmin,
	"/krypton.v1.AdminService/TransferLeadership": RoleAdmin,
	"/krypton.v1.AdminService/SnapshotSave":       RoleAdmin,
	"/krypton.v1.AdminService/SnapshotRestore":    RoleAdmin,
	"/krypton.v1.AdminService/CreateTenant":       RoleAdmin,
	"/krypton.v1.AdminService/CreateKey":          RoleAdmin,
	"/krypton.v1.AdminService/RotateKey":          RoleAdmin,
	"/krypton.v1.AdminService/RevokeKey":          RoleAdmin,
	"/krypton.v1.AdminService/LockTenant":         RoleAdmin,
	"/krypton.v1.AdminService/UnlockTenant":       RoleAdmin,
	"/krypton.v1.AdminService/RekeyTenant":        RoleAdmin,
	"/krypton.v1.AdminService/SetOwnerKey":        RoleAdmin,
	"/krypton.v1.AdminService/SetQuota":           RoleAdmin,

	// GovernanceService, read-only.
	"/krypton.v1.GovernanceService/Status":       RoleViewer,
	"/krypton.v1.GovernanceService/GetTenant":    RoleViewer,
	"/krypton.v1.GovernanceService/ListTenants":  RoleViewer,
	"/krypton.v1.GovernanceService/ListServices": RoleViewer,
	"/krypton.v1.GovernanceService/GetPolicy":    RoleViewer,
	// GovernanceService, changes. Revoke is RoleAdmin even with dry_run:
	// the role is per method, and a dry run is a rehearsal of a change.
	"/krypton.v1.GovernanceService/CreateTenant":      RoleAdmin,
	"/krypton.v1.GovernanceService/SetAnchor":         RoleAdmin,
	"/krypton.v1.GovernanceService/SetOwnerKey":       RoleAdmin,
	"/krypton.v1.GovernanceService/DeleteAnchor":      RoleAdmin,
	"/krypton.v1.GovernanceService/CreateService":     RoleAdmin,
	"/krypton.v1.GovernanceService/SetPolicy":         RoleAdmin,
	"/krypton.v1.GovernanceService/SetQuota":          RoleAdmin,
	"/krypton.v1.GovernanceService/Revoke":            RoleAdmin,
	"/krypton.v1.GovernanceService/LockTenant":        RoleAdmin,
	"/krypton.v1.GovernanceService/UnlockTenant":      RoleAdmin,
	"/krypton.v1.GovernanceService/ResyncTenant":      RoleAdmin,
	"/krypton.v1.GovernanceService/ResetRegionVoters": RoleAdmin,
	"/krypton.v1.GovernanceService/SetTenantRegions":  RoleAdmin,
}

// certificateOnly are the methods of the operator services that no token may
// call: region nodes call them with their node certificates.
var certificateOnly = map[string]bool{
	"/krypton.v1.GovernanceService/WatchRevocations": true,
	// PublishTenantKeys is called by a region node (a home region's leader) only.
	"/krypton.v1.GovernanceService/PublishTenantKeys": true,
	// TenantAnchors is called by a node of a shared tenant's home region only.
	"/krypton.v1.GovernanceService/TenantAnchors": true,
	"/krypton.v1.GovernanceService/ReportCursor":  true,
}
