-- Auto-routing for the compose `pacs` profile: every image instance this Orthanc receives is forwarded, by C-STORE,
-- to the AI node (the "medimaging" entry of DicomModalities in orthanc.json). What the AI node sends back (its
-- Structured Reports and heatmap Secondary Captures) is stored, never routed to it again, so results cannot loop:
-- an instance is skipped when it arrived from the AI node's AE title, carries the node's Manufacturer, or is not an
-- image (SR, KO, PR, ... have no Rows). The node itself also refuses its own results (reason own_result).
-- Each forward is an asynchronous Orthanc job: one that fails (AI node down) is listed, with its error, under
-- Jobs in the web UI and /jobs over REST, and can be resubmitted from there.

local AI_MODALITY = 'medimaging'
local AI_AE_TITLE = 'MEDIMAGING'
local AI_MANUFACTURER = 'medimaging-platform'

local function from_the_ai_node(tags, origin)
  if origin ~= nil and origin['RemoteAet'] == AI_AE_TITLE then
    return true
  end
  return tags['Manufacturer'] == AI_MANUFACTURER
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  if from_the_ai_node(tags, origin) or tags['Rows'] == nil then
    return
  end
  local request = { Resources = { instanceId }, Asynchronous = true }
  RestApiPost('/modalities/' .. AI_MODALITY .. '/store', DumpJson(request, true), false)
end
