"""The DICOM node: C-STORE and STOW-RS in, Structured Reports (and optionally Secondary Captures) back out.

One room per step, as MONAI Deploy splits its operators and pynetdicom its event handlers:
- `receiving`: the C-STORE SCP (association, caller allow-list, presentation-context negotiation);
  `service.api.routes_dicomweb` is the STOW-RS way in.
- `choosing`: which instances run (the routed model's intended-use gate; idempotency by SOP Instance UID).
- `sr` and `secondary_capture`: writing the results as DICOM.
- `outbox` and `delivery`: the durable folder (inbox of accepted instances, results waiting, dead letters) and
  the worker that sends results to the destination, with retries.
`node` ties them to the service's one registry, decode budget and batcher (`ServedModel.infer_bytes`), and
`lifespan` starts and stops it all with the service. Nothing here imports a route module.
"""
