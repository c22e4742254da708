"""The injection rule table: phrase fragments, and the rules built from them, each a
:class:`Rule` (signal, weight, pattern) over normalised text.

A pattern is written once for both engines of :class:`~.injection.RuleSet` (Hyperscan and
RE2); a leading ``(?m)`` is its multiline flag.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["HINT", "RULES", "Rule"]

HINT = "rot13_hint"  # internal: the text may hold ROT13; never scored


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern over normalised text (lower case, no accents), its signal and weight."""

    signal: str
    weight: float
    pattern: str


# --- phrase fragments (text is already folded: lower case, no accents) -------------------
_GAP = r"(?:\w+\W+)"  # one arbitrary word and the gap after it
_IGN = (
    r"(?:ignor(?:e|es|ed|ing)|disregard(?:s|ed|ing)?|forget|skip|discard|bypass|abandon"
    r"|set aside|put aside|throw out|do not follow|don'?t follow|stop following|neglect"
    r"|cancel|erase|delete)"
)
# "Override" is also how documentation says one setting beats another ("later rules
# override previous rules"): it counts only aimed at the assistant's own rules.
_OVERRIDE = r"(?:override|overrule)"
_DET = r"(?:(?:all|any|every|each|of|the|your|these|those|this|that|such|whatever)\W+){0,3}"
_ADJ = (
    r"(?:previous|previously|prior|preceding|above|earlier|initial|original|system|safety"
    r"|ethical|moral|content|hidden|developer|programmed|built-in|foregoing|aforementioned)"
)
_OBJ = (
    r"(?:instructions?|instruct|rules?|directions?|directives?|guidelines?|guidance|prompts?"
    r"|constraints?|programming|polic(?:y|ies)|restrictions?|filters?|training|limitations?"
    r"|protocols?|safeguards?|guardrails?|principles|concerns|considerations|boundaries"
    r"|standards)"
)
_IGN_ES = (
    r"(?:ignora\w*|olvid\w*|omit\w*|descart\w*|desestim\w*|haz caso omiso|hagan caso omiso"
    r"|no hagas caso|no sigas|no obedezcas|deja de seguir|anula\w*|pasa por alto)"
)
_OBJ_ES = (
    r"(?:instruccion\w*|reglas|indicaciones|directrices|directivas|ordenes|normas|pautas"
    r"|restricciones|prompt|filtros|politicas|consignas)"
)
_ADJ_ES = (
    r"(?:anteriores|previas|previos|de arriba|iniciales|originales|del sistema|de sistema"
    r"|de seguridad|ocultas|que te (?:dieron|han dado|di))"
)
_IGN_DE = (
    r"(?:ignorier\w*|vergiss|vergesst|vergessen sie|missacht\w*|ubergeh\w*|verwirf"
    r"|befolge nicht|befolgen sie nicht)"
)
_ADJ_DE = (
    r"(?:vorherig\w*|bisherig\w*|obig\w*|vorig\w*|fruher\w*|fruehere\w*|ursprungl\w*"
    r"|anfangl\w*|versteckt\w*|geheim\w*)"
)
_OBJ_DE = (
    r"(?:anweisung\w*|instruktion\w*|regeln|befehle|vorgaben|richtlinien|systemanweisung\w*"
    r"|systemprompt\w*|prompts?|einschrankung\w*|beschrankung\w*|filter|sicherheitsregeln)"
)
_IGN_FR = (
    r"(?:ignore\w*|oublie\w*|ne tiens pas compte|ne tenez pas compte|ne tiens plus compte"
    r"|fais abstraction|faites abstraction|neglige\w*|omets|omettez|fais fi|passe outre"
    r"|passez outre|outrepasse\w*|ne suis plus|ne suivez plus|ne respecte plus|contourne\w*)"
)
_OBJ_FR = (
    r"(?:instructions?|consignes?|regles?|directives?|ordres|indications|prompt"
    r"|restrictions?|politiques|filtres|limites)"
)
_ADJ_FR = (
    r"(?:precedent\w*|anterieur\w*|ci-dessus|ci dessus|initiales?|originales?|du systeme"
    r"|systeme|de securite|cachees?)"
)
_SHOW = (
    r"(?:repeat|print|reveal|show|display|output|tell|give|write|leak|dump|share|disclose"
    r"|expose|recite|return|provide|copy|paste|type|spell|list|echo|summari[sz]e|paraphrase"
    r"|translate|quote|send|include|reproduce|what(?:'s| is| are| was| were))"
)
_SHOW_STRICT = (
    r"(?:repeat|print|reveal|output|dump|leak|disclose|expose|recite|show me|tell me"
    r"|spell out|copy|echo|display)"
)
_SYSPROMPT = (
    r"(?:system\W*(?:prompt|message|instructions?)|pre-?prompt|preamble|meta\W*prompt"
    r"|(?:initial|original|hidden|secret|confidential|full|entire|whole|complete|exact"
    r"|developer|first)\W+(?:\w+\W+)?(?:prompt|instructions|message|rules|directives)"
    r"|prompt|configuration\W+prompt)"
)
_AI = r"(?:ai|assistant|model|chatbot|bot|llm|gpt|language model|intelligence)"
_PERSONA = (
    r"(?:dan|stan|dude|aim|mongo tom|evil\W?bot|freegpt|better\W?dan|anti\W?gpt|omega"
    r"|developer mode)"
)
_UNRESTRICTED = (
    r"(?:unrestricted|unfiltered|uncensored|amoral|unethical|unaligned|unbound|unchained"
    r"|liberated|jailbroken|rogue|evil|free)"
)

# Words of the rules above; their ROT13 forms in a text are the cue to decode it.
_ROT13_KEYWORDS = (
    "ignore", "disregard", "forget", "override", "bypass", "instructions", "instruction",
    "prompt", "system", "rules", "guidelines", "reveal", "print", "repeat", "jailbreak",
    "developer", "unrestricted", "previous", "prior", "dan", "anything", "restrictions",
    "filters", "ignora", "olvida", "instrucciones", "ignoriere", "vergiss", "anweisungen",
    "oublie", "precedentes",
)  # fmt: skip
_O, _X, _R = "instruction_override", "system_prompt_extraction", "roleplay_escalation"
_T, _A, _E = "fake_role_tag", "addressed_to_model", "encoded_payload"

RULES: tuple[Rule, ...] = (
    # --- instruction override: English
    Rule(_O, 0.8, rf"\b{_IGN}\W+{_DET}(?:{_ADJ}\W+){{1,2}}{_OBJ}"),
    Rule(
        _O,
        0.7,
        rf"\b(?:{_IGN}|{_OVERRIDE})\W+(?:(?:all|any|each|every|of|about)\W+){{0,2}}your\W+"
        rf"{_GAP}?{_OBJ}",
    ),
    Rule(
        _O,
        0.75,
        rf"\b{_OVERRIDE}\W+(?:(?:all|any|the)\W+){{0,2}}(?:safety|ethical|moral|content|system)"
        rf"\W+{_OBJ}",
    ),
    Rule(_O, 0.6, rf"\b{_IGN}\W+all\W+(?:(?:the|of the|of|these|those)\W+)?{_OBJ}"),
    Rule(_O, 0.45, rf"\b{_IGN}\W+(?:the|these|those|any)\W+{_GAP}?{_OBJ}"),
    Rule(
        _O,
        0.6,
        rf"\b{_IGN}\W+{_GAP}{{0,5}}?(?:the|your|all)\W+{_OBJ}\W+(?:(?:that\W+)?you\W+(?:were"
        r"|have been|got|received)|(?:given|provided) to you|above|before (?:it|this)"
        r"|earlier|previously|in your system)",
    ),
    Rule(
        _O, 0.75, rf"\b{_IGN}\W+{_GAP}{{0,4}}?(?:your|the)\W+system\W*(?:prompt|message|instruct)"
    ),
    Rule(
        _O,
        0.5,
        rf"\b{_IGN}\W+(?:about\W+)?(?:everything|anything|all of that|whatever)\W+(?:you(?:'ve"
        r"| have)? been told|you were told|(?:that )?(?:came|was written|is written|appears)"
        r" (?:above|before)|written (?:above|before)|above|before (?:this|that|my)|said before)",
    ),
    Rule(
        _O,
        0.45,
        r"\b(?:new|updated|real|actual|revised|additional)\W+(?:system\W+)?(?:instructions?"
        r"|directives?|rules?|task|orders)\W*:|\b(?:your|the)\W+(?:new|real|actual|true)\W+"
        r"(?:instructions?|directives?|task|purpose|role|goal)\W+(?:is|are)\b",
    ),
    Rule(
        _O,
        0.6,
        r"\b(?:(?:previous|prior|original|initial|above|earlier|your|system|assistant'?s?)\W+"
        rf"{_GAP}{{0,2}}?(?:instructions?|rules?|directives?|guidelines?|prompt)|instructions"
        rf"\W+you\W+(?:received|were given|got))\W+{_GAP}{{0,4}}?(?:are|is|were|was|have been"
        r"|has been)\W+(?:now\W+)?(?:null|void|revoked|deprecated|cancell?ed|invalid|no longer"
        r" (?:valid|in effect|apply|applicable)|replaced|overridden|obsolete|suspended|lifted"
        r"|disabled|a test)",
    ),
    Rule(
        _O,
        0.6,
        r"\b(?:developers?|admins?|administrators?|creators?|openai|anthropic|operators?"
        rf"|owners?)\W+{_GAP}?(?:has|have)\W+{_GAP}?(?:updated|changed|modified|replaced"
        rf"|overridden|revoked|lifted|removed)\W+{_GAP}?(?:instructions|rules|guidelines"
        r"|programming|restrictions|polic(?:y|ies))",
    ),
    Rule(_O, 0.3, rf"\b{_IGN}\W+all\W+(?:previous|prior|above|earlier)\b"),
    Rule(
        _O,
        0.45,
        r"\b(?:system|priority|admin|administrator|developer|emergency|security)\W+override\b"
        r"|\boverride\W+(?:mode|protocol)\W+(?:enabled|activated|engaged|on)\b"
        r"|\boverride\W+(?:authorized|enabled|activated)\b",
    ),
    # --- instruction override: Spanish, German, French
    Rule(_O, 0.8, rf"\b{_IGN_ES}\W+{_GAP}{{0,3}}?{_OBJ_ES}\W+{_ADJ_ES}"),
    Rule(_O, 0.7, rf"\b{_IGN_ES}\W+{_GAP}{{0,2}}?(?:tus|sus|vuestras)\W+{_GAP}?{_OBJ_ES}"),
    Rule(_O, 0.45, r"\bnuevas\W+instrucciones\W*:|\btu\W+nueva\W+(?:tarea|mision|funcion)\W+es"),
    Rule(_O, 0.8, rf"\b{_IGN_DE}\W+{_GAP}{{0,2}}?{_ADJ_DE}\W+{_GAP}?{_OBJ_DE}"),
    Rule(
        _O,
        0.7,
        rf"\b{_IGN_DE}\W+{_GAP}{{0,2}}?(?:deine|ihre|eure)\W+{_GAP}?{_OBJ_DE}"
        rf"|\b{_IGN_DE}\W+{_GAP}{{0,2}}?die\W+(?:systemanweisung\w*|systemprompt\w*"
        r"|systemregeln|sicherheitsregeln)",
    ),
    Rule(
        _O,
        0.7,
        rf"\b(?:setze|setz|setzen sie|hebe|heb|heben sie)\W+{_GAP}{{0,3}}?(?:vorgaben"
        r"|anweisungen|regeln|richtlinien|einschrankungen)\W+(?:ausser kraft|auf)\b",
    ),
    Rule(
        _O,
        0.45,
        r"\bneue\W+(?:anweisungen|anweisung|regeln|aufgabe)\W*:|\bdeine\W+neue\W+aufgabe\W+ist",
    ),
    Rule(_O, 0.8, rf"\b{_IGN_FR}\W+{_GAP}{{0,3}}?{_OBJ_FR}\W+{_ADJ_FR}"),
    Rule(_O, 0.7, rf"\b{_IGN_FR}\W+{_GAP}{{0,2}}?(?:tes|vos)\W+{_GAP}?{_OBJ_FR}"),
    Rule(
        _O,
        0.45,
        r"\bnouvelles\W+(?:instructions|consignes|regles)\W*:|\bta\W+nouvelle\W+(?:tache|mission)\W+est",
    ),
    # --- system prompt extraction
    Rule(_X, 0.75, rf"\b{_SHOW}\W+{_GAP}{{0,6}}?your\W+{_GAP}{{0,2}}?{_SYSPROMPT}"),
    Rule(
        _X,
        0.65,
        rf"\b(?:{_SHOW_STRICT}|what (?:are|were))\W+{_GAP}{{0,3}}?your\W+{_GAP}?"
        r"(?:instructions|rules|guidelines|directives|programming)",
    ),
    Rule(
        _X,
        0.7,
        rf"\b{_SHOW}\W+{_GAP}{{0,4}}?the\W+{_GAP}{{0,2}}?(?:instructions|prompt|rules|message"
        r"|guidelines|directives)\W+(?:(?:that\W+)?you\W+(?:were|have been|got|received|are)"
        r"\W+(?:given|told|provided|programmed)|(?:given|provided) to you|at the (?:start"
        r"|beginning)|before (?:my|this|our)\b)",
    ),
    Rule(
        _X,
        0.7,
        rf"\b{_SHOW_STRICT}\W+{_GAP}{{0,3}}?the\W+(?:initial|hidden|secret|original|confidential)\W+(?:prompt|instructions|system)",
    ),
    Rule(_X, 0.45, rf"\b{_SHOW}\W+{_GAP}{{0,3}}?the\W+system\W*(?:prompt|message)"),
    Rule(
        _X,
        0.6,
        r"\b(?:repeat|print|output|echo|copy|recite|reproduce|write out|type out|dump|show"
        rf"|display|reveal)\W+{_GAP}{{0,2}}?(?:everything|all|the text|the words|all the text"
        r"|the content|the contents|what(?:ever)? (?:is|was))\W+"
        rf"{_GAP}{{0,2}}?(?:above|before (?:this|my|our|the (?:first|conversation|start"
        r"|beginning))|earlier in (?:this|the) conversation"
        r"|at the (?:start|beginning)|prior to)",
    ),
    Rule(
        _X,
        0.65,
        rf"\b(?:what|which)\W+{_GAP}{{0,2}}?(?:instructions|rules|guidelines|directives)\W+"
        rf"(?:were|have|did)\W+(?:you\W+(?:been\W+)?(?:given|told|programmed)|{_GAP}{{0,3}}?"
        r"(?:give|gave|given)\W+you)",
    ),
    Rule(
        _X,
        0.3,
        r"\b(?:verbatim|word for word|word-for-word|letter for letter|exactly as (?:written"
        r"|given|you received)|palabra por palabra|textualmente|wort fur wort|wortlich"
        r"|mot pour mot|textuellement|mot a mot)",
    ),
    Rule(
        _X,
        0.75,
        r"\b(?:muestra\w*|revela\w*|dime|dinos|imprime|repite|ensena\w*|escribe|comparte"
        rf"|cual es|cuales son)\W+{_GAP}{{0,4}}?(?:tu|tus|su|sus)\W+{_GAP}{{0,2}}?(?:prompt"
        r"|instrucciones|mensaje (?:de|del) sistema|indicaciones|directrices)",
    ),
    Rule(
        _X,
        0.7,
        rf"\b(?:muestra\w*|revela\w*|dime|imprime|repite|ensena\w*)\W+{_GAP}{{0,3}}?(?:las|el"
        r"|los)\W+(?:instrucciones|prompt|mensaje|reglas)\W+(?:iniciales|ocultas|secretas"
        r"|originales|del sistema|de sistema|que te (?:dio|dieron|han dado))",
    ),
    Rule(
        _X,
        0.6,
        rf"\b(?:repite|imprime|copia|muestra\w*|escribe)\W+{_GAP}{{0,2}}?(?:el texto|todo)\W+"
        rf"{_GAP}?(?:de arriba|anterior|de antes)",
    ),
    Rule(
        _X,
        0.75,
        r"\b(?:zeig\w*|gib|verrat\w*|wiederhol\w*|nenn\w*|schreib\w*|druck\w*|offenbar\w*"
        rf"|liste\w*|teile?|was ist|was sind|wie lautet|wie lauten)\W+{_GAP}{{0,4}}?(?:dein\w*"
        rf"|ihr\w*|eure?\w*)\W+{_GAP}{{0,2}}?(?:systemprompt\w*|prompt\w*|anweisungen"
        r"|instruktionen|systemnachricht\w*|systemanweisung\w*|vorgaben)",
    ),
    Rule(
        _X,
        0.6,
        r"\b(?:welche|was fur)\W+(?:anweisungen|regeln|vorgaben|instruktionen)\W+"
        rf"{_GAP}{{0,4}}?gegeben",
    ),
    Rule(
        _X,
        0.6,
        rf"\b(?:wiederhol\w*|gib|druck\w*|schreib\w*|kopier\w*|zeig\w*)\W+{_GAP}{{0,2}}?"
        rf"(?:den text|alles)\W+{_GAP}?(?:oben|daruber|davor|vorher)",
    ),
    Rule(
        _X,
        0.75,
        r"\b(?:montre\w*|revele\w*|affiche\w*|donne\w*|dis|dites|ecris|ecrivez|repete\w*"
        rf"|imprime\w*|partage\w*|quel(?:le)?s? (?:est|sont))\W+{_GAP}{{0,4}}?(?:ton|ta|tes"
        rf"|votre|vos)\W+{_GAP}{{0,2}}?(?:prompt|instructions|message systeme|consignes"
        r"|directives)",
    ),
    Rule(
        _X,
        0.7,
        rf"\b(?:montre\w*|revele\w*|affiche\w*|donne\w*|repete\w*|imprime\w*)\W+{_GAP}{{0,3}}?"
        r"(?:les|le)\W+(?:instructions|prompt|message|consignes)\W+(?:initiales|cachees"
        r"|secretes|originales|systeme|du systeme)",
    ),
    Rule(
        _X,
        0.6,
        rf"\b(?:repete\w*|copie\w*|affiche\w*|imprime\w*|recite\w*)\W+{_GAP}{{0,2}}?"
        rf"(?:le texte|tout)\W+{_GAP}?(?:ci-dessus|ci dessus|au-dessus|au dessus)",
    ),
    Rule(_X, 0.6, rf"\bquelles\W+(?:instructions|consignes|regles)\W+{_GAP}{{0,7}}?donn"),
    Rule(
        _X,
        0.45,
        r"\b(?:hidden|secret|confidential)\W+(?:messages|instructions|notes|prompts?)"
        r"|\b(?:mensajes|instrucciones)\W+(?:ocult|secret)|\bversteckt\w*\W+(?:nachrichten"
        r"|anweisungen)|\bgeheim\w*\W+(?:nachrichten|anweisungen)|\b(?:messages|instructions)"
        r"\W+(?:cache|secret)",
    ),
    Rule(
        _X,
        0.45,
        rf"\b(?:output|print|reveal|show|dump|repeat|display|send|forward)\W+{_GAP}{{0,3}}?"
        r"(?:conversation|chat)\W+(?:history|log|transcript)|\b(?:revela\w*|muestra\w*|imprime)"
        rf"\W+{_GAP}{{0,2}}?conversacion\W+anterior|\bgesprachsverlauf|\bhistorique de la"
        r" conversation",
    ),
    # --- role-play escalation
    Rule(
        _R,
        0.75,
        r"\b(?:you are|you're|youre|you will be|you'll be|act as|acting as|pretend to be"
        r"|pretend you are|become|roleplay as|role-play as|play the role of|eres|seras|tu es"
        r"|tu seras|du bist)\W+(?:(?:now|going|gonna|to|pretend|be|play|act|as|ahora"
        r"|maintenant|jetzt|nun)\W+){0,5}(?:(?:an?|un|una|une|ein|eine)\W+)?"
        rf"{_PERSONA}\b",
    ),
    Rule(
        _R,
        0.75,
        r"\bdo anything now\b|\bdan\s?v?\d{1,2}\.\d\b|\bdan\W+mode\b|\bmod[eo] dan\b"
        r"|\bcualquier cosa ahora\b|\bn'importe quoi maintenant\b",
    ),
    Rule(
        _R,
        0.65,
        rf"\b(?:you|chatgpt|{_AI})\W+{_GAP}{{0,4}}?developer mode|developer mode\W+{_GAP}{{0,6}}?"
        r"(?:polic|content|censor|restrict|filter|refus|anything)|\b(?:estas|eres)\W+"
        rf"{_GAP}{{0,2}}?modo desarrollador|modo desarrollador\W+{_GAP}{{0,6}}?(?:politicas"
        r"|restricciones|censura|filtros|ignora)|\bentwicklermodus\W+(?:aktiviert|an"
        rf"|eingeschaltet)\W+{_GAP}{{0,4}}?(?:richtlinien|ignorier|regeln|filter|inhalts)"
        rf"|\bbist\W+du\W+{_GAP}{{0,2}}?im entwicklermodus|mode developpeur\W+{_GAP}{{0,6}}?"
        r"(?:politiques|restrictions|censure|filtres|ignore)",
    ),
    Rule(
        _R,
        0.6,
        r"\bjailbreak\W*(?:mode|modus|modo)\b|\bmod[eo] jailbreak\b|\[jailbreak\]|\bjailbroken\W+"
        rf"(?:version|mode|{_AI})|\b(?:you|{_AI})\W+{_GAP}{{0,3}}?(?:been\W+)?jailbroken",
    ),
    Rule(_R, 0.3, r"\bjailbr(?:eak|oken)"),
    Rule(
        _R,
        0.7,
        r"\b(?:act|behave|respond|answer|reply|pretend|roleplay|role-play|simulate|you are"
        r"|you're|youre|become|as|unlock|enable|activate|enter|switch to|operate as|be)\W+"
        rf"{_GAP}{{0,3}}?{_UNRESTRICTED}\W+{_GAP}?(?:{_AI}|version|mode)\b",
    ),
    Rule(
        _R,
        0.7,
        r"\b(?:actua|actue|comportate|responde|contesta|finge|eres|seas|conviertete)\W+"
        rf"{_GAP}{{0,4}}?(?:ia|inteligencia artificial|asistente|modelo|chatbot|bot)\W+{_GAP}?"
        r"(?:sin (?:restricciones|filtros|censura|limites|reglas|normas|ninguna)|liberad[ao])"
        rf"|\b(?:verhalte dich|tu so|du bist|sei|antworte|agiere)\W+{_GAP}{{0,4}}?(?:ki|ai"
        rf"|assistent\w*|modell|chatbot|bot)\W+{_GAP}?(?:ohne|unzensiert|befreit)"
        r"|\b(?:unzensiert\w*|uneingeschrankt\w*|befreit\w*|ungefiltert\w*)\W+(?:ki|ai|modell"
        r"|assistent\w*|chatbot|version)\b|\b(?:agis|agissez|comporte\W+toi|fais comme si"
        rf"|faites comme si|tu es|sois|soyez|reponds|repondez)\W+{_GAP}{{0,4}}?(?:ia|assistant"
        rf"|modele|chatbot|bot)\W+{_GAP}?(?:sans|liber\w*|non censur\w*)",
    ),
    Rule(
        _R,
        0.35,
        r"\b(?:no|without(?: any)?|free (?:of|from)|zero)\W+(?:\w+\W+)?(?:restrictions|filters"
        r"|limits|limitations|censorship|rules|guidelines|guardrails|boundaries|moral|ethical"
        r"|ethics|morals|morality|safety)\b|\bsin (?:ninguna )?(?:restriccion\w*|filtros?|censura"
        r"|limites|reglas"
        r"|normas)\b|\bohne (?:jegliche |alle |irgendwelche )?(?:einschrankungen|filter|regeln"
        r"|zensur|grenzen)\b|\bsans (?:aucune? )?(?:restriction|filtre|limite|censure|regle)s?\b"
        r"|\baucune (?:regle|restriction|limite)\b",
    ),
    Rule(
        _R,
        0.6,
        r"\b(?:not|no longer|never)\W+(?:\w+\W+)?(?:bound|restricted|limited|constrained)\W+by"
        rf"\W+{_GAP}{{0,6}}?(?:polic|guidelines|rules|restrictions|openai|anthropic|content)"
        r"|\b(?:not|never|n't|no longer)\W+(?:\w+\W+)?(?:have|need|required|obliged|supposed)"
        r"\W+to\W+(?:abide by|follow|obey|comply with|align with|adhere to|respect)\W+"
        rf"{_GAP}{{0,4}}?(?:rules|polic\w*|guidelines|morals|ethics|laws|restrictions)"
        rf"|\b(?:ignore|violate|bypass|disable|turn off|without|ignora|ignoriere|ignore)\W+"
        rf"{_GAP}{{0,2}}?(?:openai|anthropic|content|safety|usage|inhalts\w*|de contenido"
        r"|de contenu)\W*(?:polic|richtlinie|politi)",
    ),
    Rule(
        _R,
        0.55,
        r"\b(?:safety|content|ethical|moral)\W+(?:filters?|protocols?|polic(?:y|ies)|mode"
        r"|guidelines|rules|restrictions)\W+(?:(?:are|is|now|have been|has been)\W+){0,2}"
        r"(?:off|disabled|suspended|deactivated|lifted|removed)\b|\bsicherheits\w*\W+(?:sind"
        r"|ist)\W+(?:\w+\W+)?(?:deaktiviert|aus|abgeschaltet)|\b(?:protecciones|filtros"
        r"|restricciones)\W+(?:\w+\W+)?desactivad|\b(?:protections|filtres|restrictions)\W+"
        r"(?:\w+\W+)?desactive",
    ),
    Rule(
        _R,
        0.45,
        r"\b(?:never|don'?t|do not|won'?t|will not|must not)\W+(?:\w+\W+)?(?:refuse|decline"
        r"|deny|reject|say (?:no|you can'?t|i can'?t))|\balways (?:answers?|complies|comply"
        r"|responds?)\b"
        r"|\bcomply with (?:all|every|any) (?:user )?requests?|\bnunca\W+(?:te\W+|se\W+)?"
        r"(?:niegues|niega|rechaz\w*)|\blehnst keine|\bniemals ablehn|\bne refuses? plus"
        r"|\bne refuses? jamais",
    ),
    Rule(_R, 0.3, r"\bstay in (?:character|role)\b|\bbreak character\b|\bgod\W?mode\b"),
    # refusal suppression: the model is told never to refuse, apologise or warn
    Rule(
        _R,
        0.45,
        rf"\b(?:never|not|don'?t|do not|must not)\W+{_GAP}{{0,2}}?(?:respond|reply|answer|say"
        rf"|start|begin|use)\W+{_GAP}{{0,3}}?(?:i'?m sorry|i am sorry|i cannot|i can'?t"
        r"|as an ai|cannot|unable|unfortunately)",
    ),
    Rule(
        _R,
        0.35,
        rf"\b(?:do not|don'?t|never|without)\W+{_GAP}{{0,2}}?(?:apologi[sz]\w*|disclaimers?"
        r"|refusals?|moraliz\w*|lectur\w*|caveats?)\b",
    ),
    Rule(
        _R,
        0.4,
        r"\b(?:doesn'?t|does not|don'?t|do not|never)\W+(?:care|give a \w+)\W+(?:about\W+|for\W+)?"
        rf"{_GAP}{{0,3}}?(?:ethics|rules|laws|morals|morality|legality|consequences|guidelines"
        r"|policies|feelings)\b",
    ),
    Rule(
        _R,
        0.5,
        r"\bmoraliz\w* rant|\bmandatory\W+(?:\w+\W+)?warning|\bopposite of (?:openai'?s )?chatgpt"
        r"|\bopposite mode\b",
    ),
    Rule(
        _R,
        0.25,
        r"\bfrom now on,? you (?:are|will|must|can)\b|\ba partir de ahora (?:eres|seras"
        r"|responderas)|\bab (?:jetzt|sofort) (?:bist|wirst) du\b|\ba partir de maintenant,? tu"
        r"|\bdesormais,? tu\b",
    ),
    Rule(
        _R,
        0.35,
        r"\brespond twice\b|\b(?:two|2)\W+(?:different\W+|separate\W+|distinct\W+)?(?:responses"
        r"|answers|ways|manners|styles|personalities|personas)\b",
    ),
    Rule(_R, 0.6, r"\b(?:unrestricted|unfiltered|uncensored|evil|chaos)\W+mode\b"),
    Rule(
        _R,
        0.6,
        r"\b(?:ai|assistant|chatbot|llm|language model)\W+(?:\w+\W+){0,2}?(?:with|has|having"
        r"|without)\W+(?:no\W+|any\W+)?(?:\w+\W+)?(?:restrictions|filters|limits|guidelines"
        r"|censorship|morals|ethics|boundaries|moral principles)",
    ),
    Rule(
        _R,
        0.45,
        r"\b(?:role|persona|personality|character)\W+of\W+(?:another|a different|an?"
        r" (?:alternate|alternative|new|other))\W+(?:ai|model|chatbot|assistant|llm)"
        r"|\b(?:another|alternate|alternative)\W+(?:ai|chatbot|llm)\W+(?:\w+\W+)?(?:known as"
        r"|called|named)|\b(?:broken|break|broke|breaks)\W+free\W+(?:of|from)\b",
    ),
    Rule(
        _R,
        0.35,
        r"\b(?:can|will|could|must)\W+(?:do|say|generate|write|answer)\W+(?:anything|everything)"
        r"\b|\b(?:break|breaking|bend)\W+(?:all\W+)?(?:the|your|openai'?s?)\W+(?:\w+\W+)?"
        r"(?:rules|polic\w*|guidelines)|\bunhinged\b",
    ),
    Rule(
        _R,
        0.55,
        r"\b(?:you are|you're|youre)\W+(?:now\W+)?(?:running\W+)?in\W+(?:an?\W+)?(?:admin"
        r"|administrator|god|sudo|root|debug|maintenance|unrestricted|developer|test)\W+mode\b",
    ),
    # --- forged conversation structure
    Rule(
        _T,
        0.6,
        r"<\|im_start\|>\W*(?:system|assistant)|<\|start_header_id\|>\W*(?:system|assistant)"
        r"|<\|system\|>",
    ),
    Rule(
        _T,
        0.45,
        r"\[/?(?:system|sys|sistema|systeme|admin|administrator|developer|operator|root)\]"
        r"|<</?sys>>|\[/?inst\]|</?(?:system|sys|system_prompt|admin|developer)\s*>|</(?:user"
        r"|human)>",
    ),
    Rule(
        _T,
        0.45,
        r"(?m)^\W{0,6}(?:system|sistema|systeme|admin|administrator|developer|operator)"
        r"(?:\W+(?:note|message|prompt|update|override|notice|instructions?|mensaje|nachricht"
        r"|hinweis))?\W*:",
    ),
    Rule(
        _T,
        0.45,
        r"\bend of (?:the )?(?:user input|user message|user prompt|system prompt|conversation"
        r"|instructions)\b",
    ),
    Rule(_A, 0.45, rf"[\[(]\W*{_AI}\W*[,:]"),
    Rule(
        _A,
        0.45,
        r"\b(?:note|message|instructions?|reminder|attention|important)\W+(?:to|for)\W+(?:the"
        rf"\W+|any\W+|all\W+)?{_AI}s?\b|\b(?:ai|assistant|llm|model|agent)s?\W+reading this\b"
        r"|\bif you are an? (?:ai|llm|language model|assistant)\b|\bai assistant\W*:",
    ),
    Rule(
        "exfiltration",
        0.35,
        r"\b(?:forward|send|email|upload|post|transmit|exfiltrate)\W+(?:\w+\W+){0,6}?to\W+"
        r"(?:[\w.+-]+@[\w-]+\.\w+|https?://)|!\[[^\]\n]{0,100}\]\(\s*https?://[^\s)]{0,300}"
        r"[?&][\w-]{1,40}=",
    ),
    Rule(
        _E,
        0.35,
        r"\b(?:decode|decrypt|decipher|convert|translate|apply rot13|rot13|base64|unhex)\W+"
        rf"{_GAP}{{0,6}}?(?:and|then)\W+{_GAP}{{0,2}}?(?:follow|execute|do (?:exactly )?what"
        r"|do it|comply|obey|run|act on|carry out)",
    ),
    # --- internal: gates the ROT13 view, never scored
    Rule(HINT, 0.0, rf"\b(?:{'|'.join(codecs.encode(w, 'rot13') for w in _ROT13_KEYWORDS)})\b"),
)
