-- Argo CD health check for MfaEnrollment (group iam.mfa-operator.dev).
-- Install it as resource.customizations.health.iam.mfa-operator.dev_MfaEnrollment in
-- argocd-cm (see argocd-cm-patch.yaml beside this file).
--
--   Progressing  the operator has not reconciled this generation yet, is still working
--                (Reconciling), or is not Ready
--   Degraded     Stalled: a person must fix something (AccessDenied, a group that does
--                not exist); the message says what
--   Suspended    Ready, but some users still have to scan their QR code and submit two
--                codes: the operator has done its part and waits for people
--   Healthy      Ready and every selected user has an active MFA device
--
-- Argo CD runs custom health scripts in gopher-lua (Lua 5.1) with only the base, table
-- and package libraries: no string or math library, and every number is a float. So this
-- script uses neither, and puts no numbers into messages.

local hs = {}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function is_true(condition)
  return condition ~= nil and condition.status == "True"
end

local function describe(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition ~= nil and condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile this enrollment"
  return hs
end
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the latest spec"
  return hs
end

local conditions = status.conditions
local stalled = find(conditions, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local reconciling = find(conditions, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

local ready = find(conditions, "Ready")
local compliant = find(conditions, "Compliant")
if is_true(ready) and is_true(compliant) then
  hs.status = "Healthy"
  hs.message = describe(compliant, "Every selected user has an active MFA device")
  return hs
end
if is_true(ready) then
  hs.status = "Suspended"
  hs.message = describe(compliant, "Waiting for users to finish their MFA enrollment")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the operator to report Ready")
return hs
