// Create-policy form: the key list shows the keys of the selected vault only.
(function () {
  "use strict";
  var keys = document.querySelector("select[data-vault-select]");
  if (!keys) { return; }
  var vault = document.getElementById(keys.getAttribute("data-vault-select"));
  if (!vault) { return; }

  function sync() {
    var chosen = vault.value;
    var first = null;
    var groups = keys.querySelectorAll("optgroup");
    for (var i = 0; i < groups.length; i++) {
      var mine = groups[i].getAttribute("data-vault") === chosen;
      groups[i].hidden = !mine;
      groups[i].disabled = !mine;
      if (mine && !first) { first = groups[i].querySelector("option"); }
    }
    var current = keys.selectedOptions[0];
    if (!current || current.getAttribute("data-vault") !== chosen) {
      if (first) { first.selected = true; } else { keys.selectedIndex = -1; }
    }
  }
  vault.addEventListener("change", sync);
  sync();
})();
